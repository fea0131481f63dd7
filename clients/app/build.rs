//! Stops the build with the command to run when the NHS design system's files, which the app
//! compiles in (`src/server.rs`, `ASSETS`), are not installed. They are third-party, installed
//! from npm by `scripts/assets.sh`, and not in the repository.

use std::path::Path;

/// The installed files the binary embeds.
const NHSUK: &[&str] = &[
    "nhsuk-frontend.min.css",
    "LICENSE",
    "images/favicon.svg",
    "images/nhsuk-icon-arrow-down.svg",
    "images/nhsuk-icon-arrow-up.svg",
    "images/nhsuk-icon-arrow-up-down.svg",
    "images/nhsuk-icon-cross.svg",
];

fn main() {
    let dir = Path::new("assets/nhsuk");
    println!("cargo::rerun-if-changed=assets/nhsuk");
    for file in NHSUK {
        println!("cargo::rerun-if-changed=assets/nhsuk/{file}");
    }
    let missing: Vec<&str> = NHSUK
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        println!(
            "cargo::error=the NHS design system's styles and icons are not installed (missing in \
             clients/app/assets/nhsuk: {}). Run clients/app/scripts/assets.sh (it needs node and \
             npm) and build again.",
            missing.join(", ")
        );
    }
}
