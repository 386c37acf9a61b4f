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
