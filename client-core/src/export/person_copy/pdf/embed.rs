//! Embedding the glyphs a copy uses, and saying what text they are.
//!
//! Each face the copy uses is embedded as a Type 0 font over a CIDFontType2 (TrueType outlines)
//! with the Identity-H encoding: the content stream names glyphs by two-byte ids. Only the glyphs
//! drawn are kept (`subsetter`, renumbered from 0), so a copy carries tens of kilobytes of font
//! rather than the whole 2 MB family.
//!
//! Glyph ids say nothing about text, so each font gets a ToUnicode map from glyph to characters,
//! filled from the shaped clusters: a glyph drawn alone for some characters (a letter, an Arabic
//! joined form, a Bengali conjunct or the lam-alef ligature) maps to them. One map cannot say
//! everything: a cluster of several glyphs (a Bengali vowel sign drawn before its consonant, a
//! letter with its marks), a glyph that shows different text in two places, or a character no
//! font has, is wrapped in a marked-content span with ActualText, which readers use instead.

use std::collections::BTreeMap;
use std::io::Write;

use flate2::write::ZlibEncoder;
use flate2::Compression;
use pdf_writer::types::{CidFontType, FontFlags, SystemInfo, UnicodeCmap};
use pdf_writer::{Filter, Finish, Name, Pdf, Rect, Ref, Str};
use subsetter::GlyphRemapper;

use super::text::Shaper;
use crate::export::person_copy::fonts::Fonts;
use crate::export::ExportError;

/// The resource name of face `i` in a page's font dictionary.
pub(crate) fn resource_name(face: usize) -> Name<'static> {
    const NAMES: [&[u8]; 8] = [b"F0", b"F1", b"F2", b"F3", b"F4", b"F5", b"F6", b"F7"];
    Name(NAMES[face % NAMES.len()])
}

/// What one face has been used for so far.
#[derive(Default)]
struct Used {
    /// Old glyph id to the id in the subset (also the CID, as CIDToGIDMap is Identity).
    remapper: GlyphRemapper,
    /// Subset glyph id to the text its ToUnicode entry gives.
    text: BTreeMap<u16, String>,
}

/// The glyphs used so far, face by face, and what text they show.
pub(crate) struct Glyphs {
    used: Vec<Option<Used>>,
}

impl Glyphs {
    pub(super) fn new(faces: usize) -> Glyphs {
        Glyphs {
            used: (0..faces).map(|_| None).collect(),
        }
    }

    /// The id to write for glyph `old` of `face` (its id in the subset).
    pub(super) fn id(&mut self, face: usize, old: u16) -> u16 {
        self.used[face]
            .get_or_insert_with(Used::default)
            .remapper
            .remap(old)
    }

    /// Let subset glyph `id` of `face` stand for `text` in the ToUnicode map. True when it does
    /// (it was free, or already meant that); false when it already means something else, so the
    /// caller must say the text another way (ActualText).
    pub(super) fn claim(&mut self, face: usize, id: u16, text: &str) -> bool {
        let used = self.used[face].get_or_insert_with(Used::default);
        if id == 0 || text.is_empty() {
            return false;
        }
        match used.text.get(&id) {
            Some(t) => t == text,
            None => {
                used.text.insert(id, text.to_string());
                true
            }
        }
    }

    /// The faces used, in order.
    pub(super) fn faces(&self) -> impl Iterator<Item = usize> + '_ {
        self.used
            .iter()
            .enumerate()
            .filter(|(_, u)| u.is_some())
            .map(|(i, _)| i)
    }

    /// Write every used face into `pdf`, its objects at `refs(face)`.
    pub(super) fn write(
        self,
        pdf: &mut Pdf,
        fonts: &Fonts,
        shaper: &Shaper<'_>,
        refs: impl Fn(usize) -> FaceRefs,
    ) -> Result<(), ExportError> {
        for (face, used) in self.used.into_iter().enumerate() {
            if let Some(used) = used {
                write_face(pdf, face, &used, fonts, shaper, refs(face))?;
            }
        }
        Ok(())
    }
}

/// One face as a Type 0 font over a CIDFontType2, with its subset, widths and ToUnicode map.
fn write_face(
    pdf: &mut Pdf,
    face: usize,
    used: &Used,
    fonts: &Fonts,
    shaper: &Shaper<'_>,
    r: FaceRefs,
) -> Result<(), ExportError> {
    let file = &fonts.files[face];
    let subset =
        subsetter::subset(&file.data, 0, &used.remapper).map_err(|e| ExportError::FontSubset {
            font: file.file,
            reason: e.to_string(),
        })?;
    let base = subset_name(file.file, &used.remapper);
    let base = Name(base.as_bytes());

    pdf.type0_font(r.type0)
        .base_font(base)
        .encoding_predefined(Name(b"Identity-H"))
        .descendant_font(r.cid)
        .to_unicode(r.cmap);

    // CIDs are the subset's glyph ids, so the widths run from 0 in the remapper's order.
    let mut cid = pdf.cid_font(r.cid);
    cid.subtype(CidFontType::Type2)
        .base_font(base)
        .system_info(identity())
        .font_descriptor(r.descriptor)
        .default_width(0.0)
        .cid_to_gid_map_predefined(Name(b"Identity"));
    let widths: Vec<f32> = used
        .remapper
        .remapped_gids()
        .map(|old| shaper.advance(face, old))
        .collect();
    cid.widths().consecutive(0, widths);
    cid.finish();

    let parsed = shaper.face(face);
    let scale = shaper.scale(face);
    let em = |v: i16| f32::from(v) * scale;
    let bbox = parsed.global_bounding_box();
    let mut flags = FontFlags::SYMBOLIC;
    if !file.family.contains("Sans") {
        flags |= FontFlags::SERIF;
    }
    pdf.font_descriptor(r.descriptor)
        .name(base)
        .flags(flags)
        .bbox(Rect::new(
            em(bbox.x_min),
            em(bbox.y_min),
            em(bbox.x_max),
            em(bbox.y_max),
        ))
        .italic_angle(0.0)
        .ascent(em(parsed.ascender()))
        .descent(em(parsed.descender()))
        .cap_height(em(parsed.capital_height().unwrap_or(parsed.ascender())))
        .stem_v(if file.bold { 140.0 } else { 80.0 })
        .font_file2(r.file);

    let mut cmap = UnicodeCmap::new(Name(b"Custom"), identity());
    for (id, text) in &used.text {
        cmap.pair_with_multiple(*id, text.chars());
    }
    pdf.cmap(r.cmap, &cmap.finish());

    pdf.stream(r.file, &deflate(&subset))
        .filter(Filter::FlateDecode)
        .pair(
            Name(b"Length1"),
            i32::try_from(subset.len()).unwrap_or(i32::MAX),
        );
    Ok(())
}

/// The objects of one embedded face.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FaceRefs {
    pub type0: Ref,
    pub cid: Ref,
    pub descriptor: Ref,
    pub cmap: Ref,
    pub file: Ref,
}

fn identity() -> SystemInfo<'static> {
    SystemInfo {
        registry: Str(b"Adobe"),
        ordering: Str(b"Identity"),
        supplement: 0,
    }
}

/// A subset font's PostScript name: six capitals that depend on the glyphs kept (as the PDF
/// standard asks, so two different subsets never share a name), `+`, and the font's name.
fn subset_name(file: &str, remapper: &GlyphRemapper) -> String {
    // FNV-1a over the kept glyph ids: stable across runs and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for gid in remapper.remapped_gids() {
        for b in gid.to_be_bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let tag: String = (0..6)
        .map(|i| char::from(b'A' + ((hash >> (i * 5)) % 26) as u8))
        .collect();
    let name = file.strip_suffix(".ttf").unwrap_or(file);
    format!("{tag}+{name}")
}

/// Zlib-compress a stream (fonts compress to about half).
pub(crate) fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::with_capacity(data.len() / 2), Compression::default());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}
