//! Container names and the rules they follow.
//!
//! A container name is `<manager name>-<machine tag>`, and the machine tag of
//! machine `1/lxc/0` is `machine-1-lxc-0`. Every name must be a valid
//! hostname label, because it becomes the container's hostname.

use crate::error::InvalidValue;

/// Maximum length of a hostname label (RFC 1035).
pub const MAX_NAME_LEN: usize = 63;

/// Prefix of a machine tag: machine `1/lxc/0` has tag `machine-1-lxc-0`.
pub const MACHINE_TAG_PREFIX: &str = "machine-";

/// Container types a machine id may nest, as the machine agent names them.
/// Keeping this list closed makes a container name's owner unambiguous: in
/// `a-machine-1-machine-2`, `machine` is no container type, so the name
/// belongs to manager `a-machine-1`, not to manager `a`.
pub const CONTAINER_TYPES: &[&str] = &["lxc", "lxd", "kvm"];

/// Checks that `value` is a valid hostname label: ASCII letters, digits and
/// `-`, starting with a letter, not ending with `-`, at most
/// [`MAX_NAME_LEN`] characters. `field` names the value in the error.
pub fn validate_label(field: &str, value: &str) -> Result<(), InvalidValue> {
    let reject = |rule: String| Err(InvalidValue::new(field, value, rule));
    if value.is_empty() {
        return reject("must not be empty".into());
    }
    if value.len() > MAX_NAME_LEN {
        return reject(format!(
            "is {} characters long, but a hostname label holds at most {MAX_NAME_LEN}",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return reject(format!(
            "contains {bad:?}; only ASCII letters, digits and '-' are allowed"
        ));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return reject("must start with a letter".into());
    }
    if value.ends_with('-') {
        return reject("must not end with '-'".into());
    }
    Ok(())
}

/// Checks a manager name. It follows the rules of a container name and,
/// because containers are named `<manager name>-...`, leaves room for at
/// least a short machine tag.
pub fn validate_manager_name(name: &str) -> Result<(), InvalidValue> {
    validate_label("manager name", name)
}

/// Checks a full container name, as given to destroy or derived by
/// [`container_name`].
pub fn validate_container_name(name: &str) -> Result<(), InvalidValue> {
    validate_label("container name", name)
}

/// Maximum length of an OS series name.
pub const MAX_SERIES_LEN: usize = 32;

/// Checks an OS series name such as `bookworm`, `noble` or `3.19`: 1 to
/// [`MAX_SERIES_LEN`] lowercase ASCII letters, digits, `-` or `.`, starting
/// with a letter or digit, and no `..`. Backends use it to pick images and
/// in file and key names, so nothing else may reach them.
pub fn validate_series(series: &str) -> Result<(), InvalidValue> {
    let valid = !series.is_empty()
        && series.len() <= MAX_SERIES_LEN
        && series.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && series
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
        && !series.contains("..");
    if valid {
        Ok(())
    } else {
        Err(InvalidValue::new(
            "series",
            series,
            format!(
                "must be 1 to {MAX_SERIES_LEN} lowercase ASCII letters, digits, '-' or '.', \
                 starting with a letter or digit, such as bookworm or 3.19"
            ),
        ))
    }
}

/// Checks a machine id such as `0`, `1/lxc/0` or `2/kvm/1/lxc/3`: a number,
/// then any number of `/<container type>/<number>` parts, where the type is
/// one of [`CONTAINER_TYPES`].
pub fn validate_machine_id(id: &str) -> Result<(), InvalidValue> {
    let rule = "must be a number followed by any number of /<container type>/<number> parts, \
                where the type is lxc, lxd or kvm, such as 1/lxc/0";
    let reject = || Err(InvalidValue::new("machine id", id, rule));
    // The tag `machine-<id>` becomes a hostname when no container name is
    // known, so it must fit a hostname label.
    let max_len = MAX_NAME_LEN - MACHINE_TAG_PREFIX.len();
    if id.len() > max_len {
        return Err(InvalidValue::new(
            "machine id",
            id,
            format!(
                "is {} characters long, but at most {max_len} fit the tag {MACHINE_TAG_PREFIX}<id> in a hostname label",
                id.len()
            ),
        ));
    }
    if is_machine_path(&id.split('/').collect::<Vec<_>>()) {
        Ok(())
    } else {
        reject()
    }
}

/// Returns true when `parts` are a number, then pairs of a container type
/// and a number: a machine id split at `/`, or a tag body split at `-`.
fn is_machine_path(parts: &[&str]) -> bool {
    if parts.len().is_multiple_of(2) {
        return false;
    }
    parts.iter().enumerate().all(|(index, part)| {
        if index % 2 == 0 {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (part.len() == 1 || !part.starts_with('0'))
        } else {
            CONTAINER_TYPES.contains(part)
        }
    })
}

/// Returns true when `name` is the name of a container of manager
/// `manager_name`: `<manager name>-machine-` followed by a machine id with
/// `/` turned into `-`. A bare prefix test would also match the containers
/// of manager `<manager name>-x`, which this rejects.
pub fn is_container_of(manager_name: &str, name: &str) -> bool {
    let Some(tag_body) = name
        .strip_prefix(manager_name)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_prefix(MACHINE_TAG_PREFIX))
    else {
        return false;
    };
    is_machine_path(&tag_body.split('-').collect::<Vec<_>>())
        && validate_container_name(name).is_ok()
}

/// Returns the tag of machine `id`: `machine-` then the id with `/` turned
/// into `-` (`1/lxc/0` becomes `machine-1-lxc-0`).
pub fn machine_tag(id: &str) -> Result<String, InvalidValue> {
    validate_machine_id(id)?;
    Ok(format!("{MACHINE_TAG_PREFIX}{}", id.replace('/', "-")))
}

/// Returns the container name of machine `machine_id` under manager
/// `manager_name`, after checking both and the result.
pub fn container_name(manager_name: &str, machine_id: &str) -> Result<String, InvalidValue> {
    validate_manager_name(manager_name)?;
    let name = format!("{manager_name}-{}", machine_tag(machine_id)?);
    validate_container_name(&name)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_name_of_nested_machine() {
        assert_eq!(
            container_name("juju", "1/lxc/0").unwrap(),
            "juju-machine-1-lxc-0"
        );
        assert_eq!(container_name("juju", "0").unwrap(), "juju-machine-0");
    }

    #[test]
    fn container_names_with_symbols_rejected() {
        for name in [
            "Best_#1",
            "SWEET!",
            "almost_lions?",
            "a b",
            "a.b",
            "a\nb",
            "a\0b",
            "ü",
        ] {
            let error = validate_container_name(name).unwrap_err();
            assert!(
                error.rule.contains("only ASCII letters, digits and '-'"),
                "{name:?}: {error}"
            );
            assert!(error.to_string().contains("container name"), "{error}");
        }
    }

    #[test]
    fn manager_name_must_start_with_letter() {
        for name in ["00340599maas", "29-test", "-juju"] {
            let error = validate_manager_name(name).unwrap_err();
            assert_eq!(error.rule, "must start with a letter", "{name:?}");
            assert!(container_name(name, "0").is_err());
        }
    }

    #[test]
    fn manager_name_with_trailing_dash_rejected() {
        let error = container_name("juju-", "1/lxc/0").unwrap_err();
        assert_eq!(error.field, "manager name");
        assert_eq!(error.rule, "must not end with '-'");
    }

    #[test]
    fn manager_name_with_symbols_rejected() {
        for name in ["Best_#1", "SWEET!", "almost_lions?"] {
            let error = container_name(name, "0").unwrap_err();
            assert_eq!(error.field, "manager name");
        }
    }

    #[test]
    fn derived_name_length_limit() {
        // "-machine-0" is 10 characters, so a 53-character manager name gives 63.
        let manager = format!("a{}", "b".repeat(52));
        assert_eq!(container_name(&manager, "0").unwrap().len(), 63);
        let manager = format!("a{}", "b".repeat(53));
        let error = container_name(&manager, "0").unwrap_err();
        assert_eq!(error.field, "container name");
        assert!(error.rule.contains("64 characters"), "{error}");
        assert!(error.rule.contains("at most 63"), "{error}");
    }

    #[test]
    fn series_checked() {
        for series in ["bookworm", "noble", "3.19", "centos7", "a", "24.04"] {
            validate_series(series).unwrap();
        }
        for series in [
            "",
            "Bookworm",
            "book worm",
            "bookworm/",
            "../x",
            "a..b",
            "-x",
            ".x",
            "Bad;x",
            "x\ny",
        ] {
            let error = validate_series(series).unwrap_err();
            assert!(
                error.rule.contains("lowercase ASCII letters"),
                "{series:?}: {error}"
            );
        }
        assert!(validate_series(&"a".repeat(33)).is_err());
    }

    #[test]
    fn container_ownership_is_exact() {
        assert!(is_container_of("nu", "nu-machine-1"));
        assert!(is_container_of("nu", "nu-machine-1-lxc-0"));
        assert!(is_container_of("nu-x", "nu-x-machine-6"));
        assert!(is_container_of("nu-machine-1", "nu-machine-1-machine-6"));
        let foreign = [
            ("nu", "nu-x-machine-6"),
            ("nu", "nu-machine-1-machine-6"),
            ("nu", "nu-machine-1-lxc"),
            ("nu", "nu-machine-"),
            ("nu", "nu-machine-01"),
            ("nu", "nux-machine-1"),
            ("nu", "nu-machine-1-foo-2"),
            ("nu-x", "nu-machine-6"),
            ("nu", "_berth-template-busybox"),
        ];
        for (manager, name) in foreign {
            assert!(
                !is_container_of(manager, name),
                "{name} counted as a container of {manager}"
            );
        }
    }

    #[test]
    fn container_name_ownership_round_trips() {
        for id in ["0", "1/lxc/0", "3/kvm/2/lxd/10"] {
            for manager in ["juju", "nu-x", "a-machine-1"] {
                let name = container_name(manager, id).unwrap();
                assert!(
                    is_container_of(manager, &name),
                    "{name} not owned by {manager}"
                );
            }
        }
    }

    #[test]
    fn machine_id_length_fits_tag() {
        // "machine-" leaves 55 characters of a 63-character label.
        let longest = format!("1{}", "/lxc/1".repeat(9));
        assert_eq!(longest.len(), 55);
        assert_eq!(machine_tag(&longest).unwrap().len(), 63);
        let too_long = format!("{longest}0");
        let error = validate_machine_id(&too_long).unwrap_err();
        assert!(error.rule.contains("at most 55"), "{error}");
    }

    #[test]
    fn machine_ids_checked() {
        for id in ["0", "1/lxc/0", "12/kvm/3/lxc/10"] {
            validate_machine_id(id).unwrap();
        }
        for id in [
            "",
            "a",
            "1/",
            "1/lxc",
            "1/lxc/",
            "/1",
            "1//0",
            "01",
            "1/LXC/0",
            "1/lxc/0/",
            "1 /lxc/0",
            "-1",
            "1/foo/0",
            "1/machine/0",
        ] {
            assert!(validate_machine_id(id).is_err(), "{id:?} accepted");
        }
    }
}
