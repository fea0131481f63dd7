//! `polyphony note`, `reflection` and `agreed`: the free text of a meeting.
//!
//! Appending adds a paragraph; editing opens the whole text in `$EDITOR` and stores the difference,
//! so words another practitioner typed into the same notes on another device, offline, are kept
//! when the two versions meet.

use std::io::Read;
use std::process::Command;

use clap::Subcommand;
use polyphony_core::model::NoteKind;
use polyphony_core::profile::Profile;

use super::{changed, find_case, find_entry};
use crate::failure::Failure;

/// Subcommands shared by `note`, `reflection` and `agreed`.
#[derive(Debug, Subcommand)]
pub(crate) enum NoteCommand {
    /// Add a paragraph (the text, or standard input if TEXT is `-` or left out).
    Append {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Meeting id (a unique prefix is enough).
        meeting: String,
        /// The words to add.
        text: Option<String>,
    },
    /// Edit the whole text in $VISUAL or $EDITOR (default vi).
    Edit {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Meeting id (a unique prefix is enough).
        meeting: String,
    },
}

impl NoteCommand {
    /// Carry out the command on the meeting's text of this kind.
    pub(crate) fn run(self, profile: &mut Profile, kind: NoteKind) -> Result<(), Failure> {
        match self {
            NoteCommand::Append {
                case,
                meeting,
                text,
            } => {
                let case = find_case(profile, &case)?;
                let meeting = find_entry(profile, case, &meeting)?;
                let text = match text.as_deref() {
                    None | Some("-") => read_stdin()?,
                    Some(t) => t.to_string(),
                };
                if text.trim().is_empty() {
                    return Err(Failure::user(format!(
                        "there is nothing to add to the {kind}"
                    )));
                }
                profile.edit(case, |doc| doc.append_text(&meeting, kind, &text))?;
                changed(format!("added to the meeting's {kind}"));
            }
            NoteCommand::Edit { case, meeting } => {
                let case = find_case(profile, &case)?;
                let meeting = find_entry(profile, case, &meeting)?;
                let view = profile.view(case, &format!("edit meeting {kind}"))?;
                let current = view
                    .meetings
                    .iter()
                    .find(|m| m.meta.id == meeting)
                    .map(|m| match kind {
                        NoteKind::Notes => m.notes.clone(),
                        NoteKind::Reflections => m.reflections.clone(),
                        NoteKind::Agreed => m.agreed.clone(),
                    })
                    .ok_or_else(|| {
                        Failure::user(format!("{meeting} is not a meeting of this case"))
                    })?;
                let mut edited = edit_in_editor(profile, &current)?;
                // Editors end the file with a newline the user never typed.
                if !current.ends_with('\n') && edited.ends_with('\n') {
                    edited.pop();
                }
                if edited == current {
                    changed(format!("no change to the {kind}"));
                    return Ok(());
                }
                profile.edit(case, |doc| doc.edit_text(&meeting, kind, &edited))?;
                changed(format!("saved the edited {kind}"));
            }
        }
        Ok(())
    }
}

fn read_stdin() -> Result<String, Failure> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Failure::user(format!("could not read the text from standard input: {e}")))?;
    Ok(text.trim_end_matches('\n').to_string())
}

/// Let the user edit `text` in their editor. The file is made inside the profile's directory,
/// readable by the user alone, and removed afterwards: clinical notes do not belong in /tmp.
fn edit_in_editor(profile: &Profile, text: &str) -> Result<String, Failure> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string());
    let io = |e: std::io::Error| Failure::user(format!("could not prepare the text to edit: {e}"));
    let file = tempfile::Builder::new()
        .prefix(".edit-")
        .suffix(".txt")
        .tempfile_in(profile.home())
        .map_err(io)?;
    std::fs::write(file.path(), text).map_err(io)?;
    // Through the shell, so an editor with arguments ("code --wait") works as in git.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("polyphony-editor")
        .arg(file.path())
        .status()
        .map_err(|e| Failure::user(format!("could not start the editor '{editor}': {e}")))?;
    if !status.success() {
        return Err(Failure::user(format!(
            "the editor '{editor}' did not finish cleanly ({status}): nothing was changed"
        )));
    }
    let edited = std::fs::read_to_string(file.path())
        .map_err(|e| Failure::user(format!("could not read back the edited text: {e}")))?;
    Ok(edited)
}
