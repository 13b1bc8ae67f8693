//! Quoting of values for the shell and for systemd unit files.
//!
//! Every value that comes from a [`crate::MachineConfig`] and lands in a
//! shell script or a unit file goes through one of these functions, so it
//! stays one literal word whatever characters it holds. Values holding NUL
//! or a line break are rejected by validation before they get here: a shell
//! word can carry a newline, but a unit file line cannot.

/// Quotes `value` as one literal POSIX shell word: the value in single
/// quotes, with each `'` written as `'\''`. Inside single quotes the shell
/// expands nothing, so `$`, `` ` ``, `"`, `\`, spaces and globs stay as they
/// are.
pub fn shell_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Quotes `value` as one argument of a systemd `ExecStart=` line, in double
/// quotes with `\` and `"` escaped by a backslash. `$` is written as `$$`,
/// so systemd does not substitute a variable, and `%` as `%%`, so it does
/// not expand a specifier.
pub fn systemd_quote_argument(value: &str) -> String {
    systemd_quote(value, true)
}

/// Quotes the assignment of `value` to `name` as the value of a systemd
/// `Environment=` setting: `"name=value"` in double quotes, with `\` and
/// `"` escaped and `%` written as `%%`. systemd does not expand `$` in
/// `Environment=` (systemd.exec(5)), so it is left as it is. `name` must be
/// a valid variable name, which validation checks for the agent
/// environment.
pub fn systemd_environment(name: &str, value: &str) -> String {
    systemd_quote(&format!("{name}={value}"), false)
}

fn systemd_quote(value: &str, escape_dollar: bool) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '%' => quoted.push_str("%%"),
            '$' if escape_dollar => quoted.push_str("$$"),
            _ => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::process::Command;

    /// Values that a shell would split, expand or execute if they were
    /// pasted into a line unquoted.
    const HOSTILE: &[&str] = &[
        "",
        " ",
        "'",
        "''",
        "'\\''",
        "\"",
        "$HOME",
        "${HOME}",
        "$(touch /tmp/berth-quoting-pwned)",
        "`touch /tmp/berth-quoting-pwned`",
        "a b  c",
        "*",
        "~",
        "-n",
        "--",
        "\\",
        "\\n",
        "a;b&&c||d|e",
        "<x >y",
        "!",
        "#comment",
        "\t",
        "http://u:p'w\"d$x y@proxy:3128",
        "ü ß 中文",
    ];

    /// Runs `sh -c 'printf %s <quoted>'` and returns what the shell printed.
    fn shell_echo(quoted: &str) -> Vec<u8> {
        let output = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {quoted}"))
            .output()
            .expect("run /bin/sh");
        assert!(
            output.status.success(),
            "sh failed on {quoted}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    #[test]
    fn shell_quote_reads_back_literally() {
        for value in HOSTILE {
            let quoted = shell_quote(value);
            assert_eq!(
                shell_echo(&quoted),
                value.as_bytes(),
                "value {value:?} quoted as {quoted}"
            );
        }
        assert!(!std::path::Path::new("/tmp/berth-quoting-pwned").exists());
    }

    #[test]
    fn shell_quote_keeps_one_word() {
        for value in HOSTILE {
            let script = format!("set -- {}; printf %s \"$#\"", shell_quote(value));
            let output = Command::new("/bin/sh")
                .arg("-c")
                .arg(&script)
                .output()
                .expect("run /bin/sh");
            assert_eq!(output.stdout, b"1", "value {value:?} was not one word");
        }
    }

    #[test]
    fn shell_quote_assignment_and_export() {
        let value = "http://u'x\"y$z w@proxy:3128";
        let script = format!(
            "export http_proxy={}; /bin/sh -c 'printf %s \"$http_proxy\"'",
            shell_quote(value)
        );
        let output = Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("run /bin/sh");
        assert_eq!(String::from_utf8(output.stdout).unwrap(), value);
    }

    #[test]
    fn shell_quote_escapes_single_quote() {
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn systemd_argument_escapes() {
        assert_eq!(systemd_quote_argument("/var/lib/juju"), "\"/var/lib/juju\"");
        assert_eq!(systemd_quote_argument("a b"), "\"a b\"");
        assert_eq!(systemd_quote_argument("$HOME"), "\"$$HOME\"");
        assert_eq!(systemd_quote_argument("100%"), "\"100%%\"");
        assert_eq!(systemd_quote_argument("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn systemd_environment_escapes() {
        assert_eq!(systemd_environment("A", "x y"), "\"A=x y\"");
        assert_eq!(systemd_environment("A", "$B"), "\"A=$B\"");
        assert_eq!(systemd_environment("A", "%h"), "\"A=%%h\"");
        assert_eq!(systemd_environment("A", "'\"\\"), "\"A='\\\"\\\\\"");
    }
}
