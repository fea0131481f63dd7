//! Enrolment codes: how a new device is invited, and how it recognises its borough's server.
//!
//! An administrator makes a code and gives it to a practitioner (pasted into a message, or read out
//! over the phone). The code carries two things:
//!
//! - a random secret token, which the device presents once to prove it was invited. The server keeps
//!   only its SHA-256 ([`EnrolmentCode::token_hash`]), so a leaked server database cannot enrol
//!   devices;
//! - the SHA-256 fingerprint of the borough CA certificate, so the device can tell its borough's
//!   server from an impostor on its very first connection, before it holds any certificate.
//!
//! The text form has to survive being typed by a person, so it uses the bech32 alphabet (lowercase
//! letters and digits without the look-alikes `1`, `b`, `i`, `o`), hyphens every four characters, and
//! the bech32 BCH checksum, which catches any mistyping of up to four characters (so every single
//! typo and every swap of two neighbours) before the device talks to the network.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroize;

use super::IdentityError;

/// Length in bytes of an enrolment token: 128 bits, beyond guessing even with unlimited tries.
pub const ENROLMENT_TOKEN_LEN: usize = 16;

/// The 32 symbols of the code, each standing for 5 bits (the bech32 alphabet).
const ALPHABET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// The first symbol says which layout follows, so a later format can be recognised and explained.
const VERSION: u8 = 0;

/// Symbols of token and fingerprint: 48 bytes are 384 bits, 77 symbols of 5 bits (one padding bit).
const PAYLOAD_SYMBOLS: usize = ((ENROLMENT_TOKEN_LEN + 32) * 8).div_ceil(5);

/// Symbols of the checksum.
const CHECKSUM_SYMBOLS: usize = 6;

/// All symbols of a code: version, payload, checksum.
const CODE_SYMBOLS: usize = 1 + PAYLOAD_SYMBOLS + CHECKSUM_SYMBOLS;

/// Symbols between hyphens in the text form.
const GROUP: usize = 4;

/// Mixed into the checksum (never shown), so a bech32 string made for another purpose, such as a
/// cryptocurrency address, is not mistaken for an enrolment code.
const DOMAIN: &[u8] = b"polyphony-enrol";

/// A one-time enrolment code: a secret token and the borough CA fingerprint.
///
/// Displayed (with `to_string()`) as 21 groups of four characters separated by hyphens; parsed back
/// with [`str::parse`], which accepts upper case, spaces and line breaks, and reports mistypes as
/// [`IdentityError::BadEnrolmentCode`].
#[derive(Clone, PartialEq, Eq)]
pub struct EnrolmentCode {
    token: [u8; ENROLMENT_TOKEN_LEN],
    ca_fingerprint: [u8; 32],
}

impl EnrolmentCode {
    /// A new code with a fresh random token, for the CA whose fingerprint is `ca_fingerprint` (see
    /// [`super::BoroughCa::fingerprint`]).
    pub fn new(ca_fingerprint: [u8; 32]) -> Self {
        Self {
            token: rand::random(),
            ca_fingerprint,
        }
    }

    /// The secret token, which the device sends the server once, over an enrolment connection.
    pub fn token(&self) -> &[u8; ENROLMENT_TOKEN_LEN] {
        &self.token
    }

    /// SHA-256 of the token: what the server stores to recognise the code later without keeping the
    /// token itself.
    pub fn token_hash(&self) -> [u8; 32] {
        hash_enrolment_token(&self.token)
    }

    /// The fingerprint of the borough CA the device must find on the server (give it to
    /// [`super::enrol_client_config`]).
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        self.ca_fingerprint
    }
}

/// SHA-256 of an enrolment token as a device presented it, to compare with a stored
/// [`EnrolmentCode::token_hash`].
pub fn hash_enrolment_token(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Drop for EnrolmentCode {
    fn drop(&mut self) {
        self.token.zeroize();
    }
}

impl fmt::Debug for EnrolmentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: never let it reach a log through `{:?}`.
        f.debug_struct("EnrolmentCode")
            .field("token", &"[secret]")
            .field("ca_fingerprint", &hex::encode(self.ca_fingerprint))
            .finish()
    }
}

impl fmt::Display for EnrolmentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut payload = Vec::with_capacity(ENROLMENT_TOKEN_LEN + 32);
        payload.extend_from_slice(&self.token);
        payload.extend_from_slice(&self.ca_fingerprint);
        let mut symbols = Vec::with_capacity(CODE_SYMBOLS);
        symbols.push(VERSION);
        symbols.extend(to_symbols(&payload));
        payload.zeroize();
        symbols.extend(checksum(&symbols));
        for (i, group) in symbols.chunks(GROUP).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            for &s in group {
                write!(f, "{}", char::from(ALPHABET[usize::from(s)]))?;
            }
        }
        symbols.zeroize();
        Ok(())
    }
}

impl FromStr for EnrolmentCode {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Self, IdentityError> {
        let bad = |reason: String| IdentityError::BadEnrolmentCode(reason);
        let mut symbols = Vec::with_capacity(CODE_SYMBOLS);
        for c in text.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let position = symbols.len();
            let symbol = symbol_of(c).ok_or_else(|| {
                bad(format!(
                    "'{c}' (in group {}) never appears in an enrolment code, which uses only the letters \
                     and digits of \"{}\"; check that character",
                    position / GROUP + 1,
                    String::from_utf8_lossy(ALPHABET),
                ))
            })?;
            symbols.push(symbol);
        }
        if symbols.len() != CODE_SYMBOLS {
            return Err(bad(format!(
                "it has {} letters and digits but a code has {CODE_SYMBOLS} ({} groups of {GROUP}): \
                 a group may be missing or typed twice",
                symbols.len(),
                CODE_SYMBOLS / GROUP,
            )));
        }
        if !checksum_holds(&symbols) {
            return Err(bad(
                "its check characters do not match: a character was probably mistyped or two were \
                 swapped; compare it group by group with the original, or ask your administrator for \
                 a new code"
                    .into(),
            ));
        }
        if symbols[0] != VERSION {
            return Err(bad(
                "it was made by a newer version of Polyphony: update this app and try again".into(),
            ));
        }
        let payload = from_symbols(&symbols[1..1 + PAYLOAD_SYMBOLS]).ok_or_else(|| {
            bad("it is not a code Polyphony made: ask your administrator for a new code".into())
        })?;
        let mut code = Self {
            token: [0; ENROLMENT_TOKEN_LEN],
            ca_fingerprint: [0; 32],
        };
        code.token.copy_from_slice(&payload[..ENROLMENT_TOKEN_LEN]);
        code.ca_fingerprint
            .copy_from_slice(&payload[ENROLMENT_TOKEN_LEN..]);
        Ok(code)
    }
}

/// The 5-bit value of a typed character, forgiving case and the look-alikes the alphabet leaves out.
fn symbol_of(c: char) -> Option<u8> {
    let c = match c.to_ascii_lowercase() {
        'o' => '0',
        'i' | '1' => 'l',
        other => other,
    };
    let byte = u8::try_from(c).ok()?;
    ALPHABET
        .iter()
        .position(|&a| a == byte)
        .and_then(|p| u8::try_from(p).ok())
}

/// Bytes to 5-bit symbols, most significant bits first, the last symbol padded with zero bits.
fn to_symbols(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((bytes.len() * 8).div_ceil(5));
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(((acc >> bits) & 0x1f) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(((acc << (5 - bits)) & 0x1f) as u8);
    }
    out
}

/// 5-bit symbols back to bytes; `None` if the padding bits are not zero (a code nobody made).
fn from_symbols(symbols: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(symbols.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &s in symbols {
        acc = (acc << 5) | u32::from(s);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    (acc == 0).then_some(out)
}

/// The bech32 BCH checksum polynomial over GF(32) (BIP-173).
fn polymod(values: impl IntoIterator<Item = u8>) -> u32 {
    const GENERATOR: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut chk: u32 = 1;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GENERATOR.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

/// The domain string expanded into 5-bit values, as bech32 does with its human-readable part.
fn domain_symbols() -> impl Iterator<Item = u8> {
    DOMAIN
        .iter()
        .map(|c| c >> 5)
        .chain(std::iter::once(0))
        .chain(DOMAIN.iter().map(|c| c & 0x1f))
}

/// The six checksum symbols for `symbols`.
fn checksum(symbols: &[u8]) -> [u8; CHECKSUM_SYMBOLS] {
    let values = domain_symbols()
        .chain(symbols.iter().copied())
        .chain([0; CHECKSUM_SYMBOLS]);
    let pm = polymod(values) ^ 1;
    let mut out = [0; CHECKSUM_SYMBOLS];
    for (i, s) in out.iter_mut().enumerate() {
        *s = ((pm >> (5 * (CHECKSUM_SYMBOLS - 1 - i))) & 0x1f) as u8;
    }
    out
}

/// Whether `symbols` (checksum included) carry a valid checksum.
fn checksum_holds(symbols: &[u8]) -> bool {
    polymod(domain_symbols().chain(symbols.iter().copied())) == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_code() -> EnrolmentCode {
        let mut fingerprint = [0u8; 32];
        for (i, b) in fingerprint.iter_mut().enumerate() {
            *b = u8::try_from(i).expect("small") * 7;
        }
        EnrolmentCode::new(fingerprint)
    }

    #[test]
    fn enrolment_code_round_trips() {
        for _ in 0..50 {
            let code = sample_code();
            let text = code.to_string();
            let back: EnrolmentCode = text.parse().expect("parses");
            assert_eq!(back, code);
            assert_eq!(back.ca_fingerprint(), code.ca_fingerprint());
            assert_eq!(back.token_hash(), code.token_hash());
        }
    }

    #[test]
    fn enrolment_code_text_is_grouped_lowercase() {
        let text = sample_code().to_string();
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(groups.len(), CODE_SYMBOLS / GROUP);
        assert!(groups.iter().all(|g| g.len() == GROUP), "{text}");
        assert!(
            text.bytes().all(|b| b == b'-' || ALPHABET.contains(&b)),
            "{text}"
        );
        assert!(text.starts_with('q'), "version 0 shows as 'q': {text}");
    }

    #[test]
    fn enrolment_code_survives_upper_case_spaces_and_line_breaks() {
        let code = sample_code();
        let text = code.to_string().to_uppercase().replace('-', " ");
        let (a, b) = text.split_at(40);
        let pasted = format!("  {a}\n{b}  ");
        assert_eq!(pasted.parse::<EnrolmentCode>().expect("parses"), code);
    }

    #[test]
    fn look_alike_characters_are_read_as_meant() {
        let code = sample_code();
        let text = code.to_string().replace('0', "O").replace('l', "1");
        assert_eq!(text.parse::<EnrolmentCode>().expect("parses"), code);
    }

    #[test]
    fn every_single_mistyped_character_is_caught() {
        let code = sample_code();
        let text = code.to_string();
        for (i, original) in text.char_indices() {
            if original == '-' {
                continue;
            }
            for &replacement in ALPHABET {
                let replacement = char::from(replacement);
                if replacement == original {
                    continue;
                }
                let mut typo = text.clone();
                typo.replace_range(i..=i, &replacement.to_string());
                match typo.parse::<EnrolmentCode>() {
                    Err(IdentityError::BadEnrolmentCode(reason)) => {
                        assert!(reason.contains("mistyped"), "{reason}")
                    }
                    other => panic!("{typo} was not caught: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn swapped_neighbours_are_caught() {
        let code = sample_code();
        let symbols: Vec<char> = code.to_string().chars().filter(|&c| c != '-').collect();
        for i in 0..symbols.len() - 1 {
            if symbols[i] == symbols[i + 1] {
                continue;
            }
            let mut swapped = symbols.clone();
            swapped.swap(i, i + 1);
            let typo: String = swapped.into_iter().collect();
            assert!(
                matches!(
                    typo.parse::<EnrolmentCode>(),
                    Err(IdentityError::BadEnrolmentCode(_))
                ),
                "swap at {i} was not caught"
            );
        }
    }

    #[test]
    fn foreign_character_is_named_in_the_error() {
        let text = sample_code().to_string();
        let typo = format!("{}b{}", &text[..5], &text[6..]);
        let err = typo
            .parse::<EnrolmentCode>()
            .expect_err("b is not in the alphabet");
        let message = err.to_string();
        assert!(
            message.contains("'b'") && message.contains("group 2"),
            "{message}"
        );
    }

    #[test]
    fn missing_group_is_reported_as_such() {
        let text = sample_code().to_string();
        let short = &text[..text.len() - 5];
        let err = short.parse::<EnrolmentCode>().expect_err("short");
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(matches!(err, IdentityError::BadEnrolmentCode(_)));
    }

    #[test]
    fn empty_text_is_not_a_code() {
        assert!(matches!(
            "".parse::<EnrolmentCode>(),
            Err(IdentityError::BadEnrolmentCode(_))
        ));
    }

    #[test]
    fn token_hash_is_sha256_of_token() {
        let code = sample_code();
        assert_eq!(
            code.token_hash(),
            <[u8; 32]>::from(Sha256::digest(code.token()))
        );
        assert_eq!(code.token_hash(), hash_enrolment_token(code.token()));
        assert_ne!(code.token(), sample_code().token(), "tokens are random");
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let code = sample_code();
        let shown = format!("{code:?}");
        assert!(!shown.contains(&hex::encode(code.token())), "{shown}");
        assert!(!shown.contains(&format!("{:?}", code.token())), "{shown}");
    }

    #[test]
    fn symbol_packing_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(
            from_symbols(&to_symbols(&bytes)).expect("zero padding"),
            bytes
        );
    }
}
