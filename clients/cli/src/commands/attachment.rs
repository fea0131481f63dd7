//! `polyphony attachment`: letters and documents attached to a case or a meeting (a referral
//! letter, a GP letter, a document the person brought). The file's bytes are kept, encrypted,
//! beside the case on this device, and move to and from the borough server at `polyphony sync`.
//! An attachment is never deleted: a wrong one is marked entered in error (`polyphony error`).

use std::path::PathBuf;

use clap::Subcommand;
use polyphony_core::model::attachments::{check_size, human_size};
use polyphony_core::model::AttachmentKind;
use polyphony_core::profile::{AttachFile, Profile};
use serde::Serialize;

use super::{created, find_case, find_entry};
use crate::failure::Failure;
use crate::output::{self, Page};

/// `attachment` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AttachmentCommand {
    /// Attach a file (PDF, image, office document; at most 20 MB); prints its id.
    Add {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The file.
        file: PathBuf,
        /// referral_letter, gp_letter, letter, persons_document or other.
        #[arg(long)]
        kind: AttachmentKind,
        /// What a person reads in the list (the file's name if left out).
        #[arg(long, default_value = "")]
        title: String,
        /// The meeting it belongs to (id, a unique prefix is enough).
        #[arg(long)]
        meeting: Option<String>,
    },
    /// The case's attachments, and whether each is saved on the borough server.
    List {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Print JSON (shape in docs/JSON.md).
        #[arg(long)]
        json: bool,
    },
    /// Write an attachment's file out, to open it.
    Save {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The attachment's id (a unique prefix is enough).
        attachment: String,
        /// Where to write it (a file that exists is not overwritten).
        #[arg(long)]
        to: PathBuf,
    },
}

/// One line of `attachment list --json`.
#[derive(Serialize)]
struct Listed {
    #[serde(flatten)]
    attachment: polyphony_core::model::AttachmentView,
    /// Where its bytes are: saved, only_here or not_here.
    state: Option<polyphony_core::profile::BlobState>,
}

impl AttachmentCommand {
    /// Carry out the command.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        match self {
            AttachmentCommand::Add {
                case,
                file,
                kind,
                title,
                meeting,
            } => {
                let case = find_case(profile, &case)?;
                let meeting = match meeting {
                    Some(m) => Some(find_entry(profile, case, &m)?),
                    None => None,
                };
                let size = std::fs::metadata(&file)
                    .map_err(|e| Failure::user(format!("cannot read {}: {e}", file.display())))?
                    .len();
                // The model's own check, before the file is read into memory.
                check_size(size)?;
                let content = std::fs::read(&file)
                    .map_err(|e| Failure::user(format!("cannot read {}: {e}", file.display())))?;
                let file_name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let id = profile.attach(
                    case,
                    AttachFile {
                        kind,
                        title: &title,
                        file_name: &file_name,
                        content: &content,
                        meeting,
                    },
                )?;
                created(
                    id,
                    format!(
                        "{} attached ({}): on this device only until the next `polyphony sync`",
                        kind.label(),
                        human_size(content.len() as u64)
                    ),
                );
            }
            AttachmentCommand::List { case, json } => {
                let case = find_case(profile, &case)?;
                let view = profile.view(case, "attachments")?;
                let mut listed = Vec::new();
                for a in view.attachments {
                    let state = match a.sha256 {
                        Some(h) => Some(profile.blob_state(case, &h)?),
                        None => None,
                    };
                    listed.push(Listed {
                        attachment: a,
                        state,
                    });
                }
                if json {
                    return output::json(&listed);
                }
                let mut page = Page::default();
                if listed.is_empty() {
                    page.line(0, "no attachments");
                }
                for l in &listed {
                    let a = &l.attachment;
                    if a.meta.withheld() {
                        page.line(
                            0,
                            format!(
                                "{}  [recorded on the wrong person's record: withheld]",
                                polyphony_core::model::short(a.meta.id)
                            ),
                        );
                        continue;
                    }
                    let error = if a.meta.entered_in_error.is_some() {
                        "  [entered in error]"
                    } else {
                        ""
                    };
                    page.line(
                        0,
                        format!(
                            "{}  {}: {} ({}, {}){error}",
                            polyphony_core::model::short(a.meta.id),
                            a.kind.label(),
                            a.title,
                            a.file_name,
                            human_size(a.size)
                        ),
                    );
                    let by = a
                        .meta
                        .created_by
                        .as_ref()
                        .map(|b| b.practitioner_name.clone())
                        .unwrap_or_else(|| "unknown".into());
                    let at = output::when_opt(a.meta.created_at.as_deref());
                    page.line(2, format!("attached by {by}, {at}"));
                    if let Some(state) = l.state {
                        page.line(2, state.label());
                    }
                }
                page.print();
            }
            AttachmentCommand::Save {
                case,
                attachment,
                to,
            } => {
                let case = find_case(profile, &case)?;
                let id = find_entry(profile, case, &attachment)?;
                let (a, bytes) = profile.open_attachment(case, id)?;
                let Some(bytes) = bytes else {
                    return Err(Failure::user(if a.sha256.is_none() {
                        "this attachment is withheld (recorded on the wrong person's record): it cannot be opened".to_string()
                    } else {
                        "the file is not on this device yet: it is fetched at the next `polyphony sync`".to_string()
                    }));
                };
                use std::io::Write;
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&to)
                    .map_err(|e| Failure::user(format!("cannot write {}: {e}", to.display())))?;
                out.write_all(&bytes)
                    .and_then(|()| out.sync_all())
                    .map_err(|e| Failure::user(format!("cannot write {}: {e}", to.display())))?;
                eprintln!(
                    "{} ({}) written to {}",
                    a.title,
                    human_size(bytes.len() as u64),
                    to.display()
                );
            }
        }
        Ok(())
    }
}
