//! `polyphony enrol`: join this device to a borough server with an administrator's one-time code.

use clap::Args;
use polyphony_core::net::NetError;
use polyphony_core::profile::{Profile, ProfileError};
use polyphony_core::sync::ErrorCode;

use super::{block_on, created};
use crate::failure::Failure;

/// Arguments of `enrol`.
#[derive(Debug, Args)]
pub(crate) struct EnrolArgs {
    /// The borough server's address, host:port.
    #[arg(value_name = "SERVER_ADDR")]
    server: String,
    /// The enrolment code your administrator gave you (spaces and capitals are fine).
    code: String,
    /// A name for this device, shown to administrators (default: the computer's name).
    #[arg(long, value_name = "NAME")]
    device_name: Option<String>,
}

impl EnrolArgs {
    /// Enrol; prints the device id.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let device_name = self.device_name.unwrap_or_else(host_name);
        let enrolment = block_on(profile.enrol(&self.server, &self.code, &device_name))?.map_err(
            |e| match e {
                // A used, expired or mistyped code is for the user to sort out, not a network fault.
                ProfileError::Net(NetError::Refused { code, .. }) => {
                    let said = e.to_string();
                    Failure::User(match code {
                        // The server's reason says what to do (a used, expired or unknown code;
                        // an app to update).
                        ErrorCode::BadEnrolment | ErrorCode::UnsupportedVersion => said,
                        ErrorCode::StorageFailed | ErrorCode::Busy | ErrorCode::Internal => {
                            format!("{said}; try again in a few minutes, and if the code is then refused ask your administrator for a new one")
                        }
                        _ => format!("{said}: ask your administrator for a new enrolment code"),
                    })
                }
                other => Failure::from(other),
            },
        )?;
        let teams: Vec<&str> = enrolment.teams.iter().map(|t| t.name.as_str()).collect();
        let what = format!(
            "enrolled this device ({device_name}) with {} as {}, team {}",
            enrolment.server,
            enrolment.practitioner_name,
            if teams.is_empty() {
                "none yet".to_string()
            } else {
                teams.join(", ")
            }
        );
        created(profile.device(), what);
        Ok(())
    }
}

/// The computer's name, or "device" where it cannot be read.
fn host_name() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_kernel
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "device".to_string())
}
