//! Tables and JSON for the `berth` command's results.

use berth::{HardwareCharacteristics, Instance};
use serde::Serialize;

/// Prints rows under `headers` as a table with columns padded to the widest
/// cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let format_row = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}", width = *width))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    println!("{}", format_row(headers.to_vec()));
    for row in rows {
        println!("{}", format_row(row.iter().map(String::as_str).collect()));
    }
}

/// Returns the addresses of `instance` joined with commas, or `-`.
pub fn addresses(instance: &Instance) -> String {
    if instance.addresses.is_empty() {
        "-".to_owned()
    } else {
        instance
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Prints instances as a table of name, status and addresses.
pub fn print_instances(instances: &[Instance]) {
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|instance| {
            vec![
                instance.id.to_string(),
                instance.status.to_string(),
                addresses(instance),
            ]
        })
        .collect();
    print_table(&["NAME", "STATUS", "ADDRESSES"], &rows);
}

/// A created container with its hardware, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct Created<'a> {
    /// The new instance.
    pub instance: &'a Instance,
    /// Its hardware characteristics.
    pub hardware: &'a HardwareCharacteristics,
    /// The hardware in the agent's `key=value` form.
    pub hardware_text: String,
}

/// Prints `value` as pretty JSON on standard output.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
