//! Every option that a binary's --help lists is documented in its man page.

use std::process::Command;

const BINS: &[(&str, &str)] = &[
    ("dup-scan", env!("CARGO_BIN_EXE_dup-scan")),
    ("dup-sig", env!("CARGO_BIN_EXE_dup-sig")),
    ("dup-delta", env!("CARGO_BIN_EXE_dup-delta")),
    ("dup-pack", env!("CARGO_BIN_EXE_dup-pack")),
    ("dup-put", env!("CARGO_BIN_EXE_dup-put")),
    ("dup-sync", env!("CARGO_BIN_EXE_dup-sync")),
    ("dup-ls", env!("CARGO_BIN_EXE_dup-ls")),
    ("dup-get", env!("CARGO_BIN_EXE_dup-get")),
];

/// The long options in argh's help text.
fn options(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in help.lines() {
        for word in line.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
            if let Some(rest) = word.strip_prefix("--") {
                let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
                if !name.is_empty() && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

#[test]
fn help_matches_man_pages() {
    let man_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/man");
    for (name, exe) in BINS {
        let out = Command::new(exe).arg("--help").output().unwrap();
        assert!(out.status.success(), "{name} --help failed");
        let help = String::from_utf8(out.stdout).unwrap();
        let page = std::fs::read_to_string(format!("{man_dir}/{name}.1"))
            .unwrap_or_else(|_| panic!("man/{name}.1 is missing"));
        // roff writes a dash in an option as \-.
        let page = page.replace("\\-", "-");
        for opt in options(&help) {
            assert!(page.contains(&format!("--{opt}")), "man/{name}.1 does not document --{opt}");
        }
    }
}

/// The classic wrapper: every option it accepts (its table of duplicity's
/// options) is in its --help, and every option of --help is in man/dup-duplicity.1.
#[test]
fn wrapper_help_matches_its_man_page() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/scripts/duplicity");
    let out = Command::new("sh").arg(&script).arg("--help").output().unwrap();
    assert!(out.status.success(), "duplicity --help failed");
    let help = String::from_utf8(out.stdout).unwrap();
    let text = std::fs::read_to_string(&script).unwrap();
    let table = text.split("longopts=\"").nth(1).and_then(|t| t.split('"').next()).expect("the option table");
    let help_opts = options(&help);
    for entry in table.split_whitespace() {
        let name = entry.split(':').next().unwrap();
        assert!(help_opts.iter().any(|o| o == name), "--help does not name --{name}");
    }
    let page = std::fs::read_to_string(format!("{root}/man/dup-duplicity.1")).unwrap().replace("\\-", "-");
    for opt in help_opts {
        assert!(page.contains(&format!("--{opt}")), "man/dup-duplicity.1 does not document --{opt}");
    }
}
