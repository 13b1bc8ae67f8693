//! Progress output of the `berth` command: bars on a terminal, plain lines
//! otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use berth::{Progress, ProgressEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows a create's steps and byte counts. On a terminal, downloads and
/// imports get a progress bar; otherwise each step and every tenth of a
/// transfer becomes one line on standard error.
pub struct ProgressDisplay {
    bars: Option<MultiProgress>,
    transfers: Mutex<HashMap<String, Transfer>>,
    quiet: bool,
}

struct Transfer {
    bar: Option<ProgressBar>,
    /// The last tenth of the total that was printed as a line.
    printed_tenth: u64,
}

impl ProgressDisplay {
    /// Creates a display on standard error. With `quiet`, step lines are
    /// left out (for `--json` output) and only transfers are shown.
    pub fn new(quiet: bool) -> Self {
        let bars = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            bars,
            transfers: Mutex::new(HashMap::new()),
            quiet,
        }
    }

    fn transfer(&self, what: &str, done: u64, total: Option<u64>) {
        let mut transfers = self
            .transfers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let transfer = transfers
            .entry(what.to_owned())
            .or_insert_with(|| Transfer {
                bar: self.bars.as_ref().map(|bars| {
                    let bar = bars.add(ProgressBar::new(total.unwrap_or(0)));
                    let style = ProgressStyle::with_template(
                        "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    bar.set_style(style);
                    bar.set_message(what.to_owned());
                    bar
                }),
                printed_tenth: 0,
            });
        match &transfer.bar {
            Some(bar) => {
                if let Some(total) = total {
                    bar.set_length(total);
                }
                bar.set_position(done);
                if total.is_some_and(|total| done >= total) {
                    bar.finish();
                }
            }
            None => {
                let tenth = total
                    .filter(|total| *total > 0)
                    .map_or(0, |total| done * 10 / total);
                if tenth > transfer.printed_tenth || done == 0 {
                    transfer.printed_tenth = tenth;
                    let total = total.map_or_else(|| "?".to_owned(), |total| total.to_string());
                    eprintln!("{what}: {done}/{total} bytes");
                }
            }
        }
    }

    /// Ends every bar and clears them from the terminal, so that output
    /// printed next starts on a line of its own.
    pub fn finish(&self) {
        let transfers = self
            .transfers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for transfer in transfers.values() {
            if let Some(bar) = &transfer.bar {
                bar.finish_and_clear();
            }
        }
        if let Some(bars) = &self.bars {
            let _ = bars.clear();
        }
    }

    fn line(&self, text: String) {
        if self.quiet {
            return;
        }
        match &self.bars {
            // Clears the bars, prints the line and draws the bars again below it.
            Some(bars) => bars.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }
}

impl Progress for ProgressDisplay {
    fn report(&self, event: &ProgressEvent<'_>) {
        match event {
            ProgressEvent::StepStarted { .. } => {}
            ProgressEvent::StepFinished {
                container,
                step,
                elapsed,
            } => {
                self.line(format!(
                    "{container}: {step} done in {}",
                    format_duration(*elapsed)
                ));
            }
            ProgressEvent::Bytes { what, done, total } => self.transfer(what, *done, *total),
        }
    }
}

/// Formats a duration as milliseconds below ten seconds, else seconds.
pub fn format_duration(elapsed: Duration) -> String {
    if elapsed < Duration::from_secs(10) {
        format!("{:.1} ms", elapsed.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} s", elapsed.as_secs_f64())
    }
}
