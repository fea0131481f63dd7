//! The fonts the PDF copy is set in, read from a folder at export time.
//!
//! A person's copy must show their name in its own letters: the boroughs we serve write Polish,
//! Romanian, Somali, Bengali, Gujarati, Urdu and Arabic. The PDF base fonts only know
//! Windows-1252, so the copy embeds (a subset of) the Noto fonts, free under the SIL Open Font
//! License. They are third-party files: the repository does not hold them, `scripts/pdf-fonts.sh`
//! fetches a pinned, checksummed copy, and Debian's `fonts-noto-core` installs the same files
//! system-wide. Only exporting a PDF needs them, so they are read when a PDF is asked for, never
//! at build time (the server and the other exports work without them).
//!
//! Each script family comes in Regular and Bold. A character is set in the first family that has
//! it, in the order of [`FAMILIES`]; Urdu is set in Noto Naskh Arabic (one font for the Arabic
//! script: the text does not say which language it is in).

use std::path::{Path, PathBuf};

/// Where Debian's `fonts-noto-core` puts the fonts, searched when no folder is given.
pub const SYSTEM_FONT_DIR: &str = "/usr/share/fonts/truetype/noto";

/// The families, in the order a character looks for its glyph: (name, regular file, bold file).
pub(crate) const FAMILIES: [(&str, &str, &str); 4] = [
    ("Noto Sans", "NotoSans-Regular.ttf", "NotoSans-Bold.ttf"),
    (
        "Noto Naskh Arabic",
        "NotoNaskhArabic-Regular.ttf",
        "NotoNaskhArabic-Bold.ttf",
    ),
    (
        "Noto Sans Bengali",
        "NotoSansBengali-Regular.ttf",
        "NotoSansBengali-Bold.ttf",
    ),
    (
        "Noto Sans Gujarati",
        "NotoSansGujarati-Regular.ttf",
        "NotoSansGujarati-Bold.ttf",
    ),
];

/// Why the fonts could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FontError {
    /// A font file is not in the folder.
    #[error(
        "the PDF copy needs the Noto font {file}, which is not in {dir}: run scripts/pdf-fonts.sh \
         and point POLYPHONY_FONT_DIR (or --font-dir) at the folder it fills, or install Debian's \
         fonts-noto-core (the HTML copy needs no fonts)"
    )]
    Missing {
        /// The file looked for.
        file: &'static str,
        /// The folder it was looked for in.
        dir: PathBuf,
    },
    /// A font file is there but could not be read.
    #[error("could not read the font {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A font file is there but is not a font this renderer can use.
    #[error("{path} is not an OpenType font the PDF copy can use: fetch it again with scripts/pdf-fonts.sh")]
    Invalid {
        /// The file.
        path: PathBuf,
    },
}

/// One font file's bytes.
pub(crate) struct FontFile {
    /// The family, as people call it.
    pub family: &'static str,
    /// The file name, e.g. `NotoSans-Bold.ttf`.
    pub file: &'static str,
    /// Whether this is the bold face.
    pub bold: bool,
    /// The whole file.
    pub data: Vec<u8>,
}

/// The fonts a PDF copy is set in, loaded once and reused for every export.
pub struct Fonts {
    /// Every family's regular face then its bold face, in [`FAMILIES`] order: face `2 * family +
    /// bold`.
    pub(crate) files: Vec<FontFile>,
}

impl std::fmt::Debug for Fonts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.files.iter().map(|x| x.file))
            .finish()
    }
}

impl Fonts {
    /// Load every font the copy needs from `dir`; fails, naming the file and what to do, when one
    /// is missing or is not a font.
    pub fn load(dir: &Path) -> Result<Fonts, FontError> {
        let mut files = Vec::with_capacity(2 * FAMILIES.len());
        for (family, regular, bold) in FAMILIES {
            for (file, is_bold) in [(regular, false), (bold, true)] {
                let path = dir.join(file);
                let data = match std::fs::read(&path) {
                    Ok(d) => d,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(FontError::Missing {
                            file,
                            dir: dir.to_path_buf(),
                        })
                    }
                    Err(source) => return Err(FontError::Unreadable { path, source }),
                };
                if rustybuzz::Face::from_slice(&data, 0).is_none() {
                    return Err(FontError::Invalid { path });
                }
                files.push(FontFile {
                    family,
                    file,
                    bold: is_bold,
                    data,
                });
            }
        }
        Ok(Fonts { files })
    }

    /// Load the fonts from `dir` when one is given (a `--font-dir` flag or `POLYPHONY_FONT_DIR`),
    /// else from [`SYSTEM_FONT_DIR`].
    pub fn locate(dir: Option<&Path>) -> Result<Fonts, FontError> {
        Fonts::load(dir.unwrap_or(Path::new(SYSTEM_FONT_DIR)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_fonts_missing_or_damaged_say_which_file_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = Fonts::load(dir.path()).unwrap_err();
        assert!(
            matches!(
                e,
                FontError::Missing {
                    file: "NotoSans-Regular.ttf",
                    ..
                }
            ),
            "{e:?}"
        );
        let said = e.to_string();
        assert!(said.contains("scripts/pdf-fonts.sh") && said.contains("POLYPHONY_FONT_DIR"));
        for (_, regular, bold) in FAMILIES {
            std::fs::write(dir.path().join(regular), b"not a font").unwrap();
            std::fs::write(dir.path().join(bold), b"not a font").unwrap();
        }
        assert!(matches!(
            Fonts::load(dir.path()).unwrap_err(),
            FontError::Invalid { .. }
        ));
    }
}
