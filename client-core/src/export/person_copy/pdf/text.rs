//! From a paragraph's characters to shaped glyphs: which font, which direction, which glyphs.
//!
//! A paragraph is cut into runs that share a font face and a bidi embedding level, and each run is
//! shaped on its own with `rustybuzz` (HarfBuzz's shaping in Rust). Shaping is what makes
//! Bengali, Gujarati and Arabic readable: a vowel sign moves before its consonant, consonants
//! join into conjuncts, Arabic letters take their joined forms and `لا` becomes one ligature.
//! Each run remembers, cluster by cluster, which characters its glyphs show, so the PDF can say
//! what the text is (its ToUnicode map and ActualText) and `pdftotext` or a screen reader reads
//! the real words back.
//!
//! The levels come from the Unicode bidirectional algorithm (`unicode-bidi`); lines are put in
//! visual order after line breaking ([`visual_order`]), as the algorithm's rule L2 says.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use rustybuzz::ttf_parser::Tag;
use rustybuzz::{Direction, Face, Feature, Script, ShapePlan, UnicodeBuffer};
use unicode_bidi::{BidiClass, BidiInfo, Level};

use crate::export::person_copy::fonts::{Fonts, FAMILIES};

/// One shaped glyph. Lengths are in thousandths of the font size (PDF text space).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Glyph {
    /// The glyph's id in the whole (not yet subset) font.
    pub id: u16,
    /// How far the pen moves after it.
    pub advance: f32,
    /// Where it is drawn relative to the pen (marks sit over or under their letter).
    pub x_offset: f32,
    pub y_offset: f32,
}

/// Glyphs that together show some characters: one letter, a ligature, a consonant with its vowel
/// sign. The smallest piece whose text is known.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cluster {
    /// Its glyphs, as indices into [`Run::glyphs`].
    pub glyphs: Range<usize>,
    /// The characters they show, in logical (reading) order.
    pub text: String,
}

/// Text in one face and one direction, shaped. Glyphs and clusters are in visual (left to right)
/// order, so a right-to-left run's first cluster is its last word's last letter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Run {
    /// Index into [`Fonts::files`].
    pub face: usize,
    /// Its bidi embedding level: odd is right to left.
    pub level: u8,
    /// Whitespace between words (where a line may break).
    pub space: bool,
    pub glyphs: Vec<Glyph>,
    pub clusters: Vec<Cluster>,
}

impl Run {
    /// Its width at `size` points.
    pub(super) fn width(&self, size: f32) -> f32 {
        self.glyphs.iter().map(|g| g.advance).sum::<f32>() * size / 1000.0
    }

    fn rtl(&self) -> bool {
        self.level % 2 == 1
    }

    /// Cut after the first `keep` clusters in reading order (for a word longer than a line).
    pub(super) fn split(self, keep: usize) -> (Run, Run) {
        let n = self.clusters.len();
        let keep = keep.min(n);
        // In visual order, the first `keep` clusters read are on the left of a left-to-right run
        // and on the right of a right-to-left one.
        let (left, right) = if self.rtl() {
            (n - keep, keep)
        } else {
            (keep, n - keep)
        };
        let part = |clusters: &[Cluster]| {
            let start = clusters.first().map_or(0, |c| c.glyphs.start);
            let end = clusters.last().map_or(start, |c| c.glyphs.end);
            Run {
                face: self.face,
                level: self.level,
                space: self.space,
                glyphs: self.glyphs[start..end].to_vec(),
                clusters: clusters
                    .iter()
                    .map(|c| Cluster {
                        glyphs: c.glyphs.start - start..c.glyphs.end - start,
                        text: c.text.clone(),
                    })
                    .collect(),
            }
        };
        let (l, r) = (part(&self.clusters[..left]), part(&self.clusters[left..]));
        debug_assert_eq!(left + right, n);
        if self.rtl() {
            (r, l)
        } else {
            (l, r)
        }
    }

    /// The width of each cluster in reading order, at `size` points.
    pub(super) fn cluster_widths(&self, size: f32) -> Vec<f32> {
        let mut w: Vec<f32> = self
            .clusters
            .iter()
            .map(|c| {
                self.glyphs[c.glyphs.clone()]
                    .iter()
                    .map(|g| g.advance)
                    .sum::<f32>()
                    * size
                    / 1000.0
            })
            .collect();
        if self.rtl() {
            w.reverse();
        }
        w
    }
}

/// A paragraph, shaped: its runs in logical order.
#[derive(Debug, Clone)]
pub(crate) struct Paragraph {
    /// Its base direction is right to left (it has no left-to-right letter at all: a note
    /// written wholly in Arabic or Urdu): its lines are set flush right.
    pub rtl: bool,
    pub runs: Vec<Run>,
}

/// The fonts, parsed for shaping.
pub(crate) struct Shaper<'f> {
    faces: Vec<Face<'f>>,
    /// Thousandths of the font size per font unit.
    scale: Vec<f32>,
    /// Shaping plans by face, direction and script. Making a plan (reading the font's feature
    /// tables) costs far more than shaping a word with it, and a copy shapes hundreds of runs.
    plans: RefCell<HashMap<(usize, bool, Script), ShapePlan>>,
}

impl<'f> Shaper<'f> {
    /// Parse every face ([`Fonts::load`] checked that each parses).
    pub(super) fn new(fonts: &'f Fonts) -> Shaper<'f> {
        let faces: Vec<Face<'f>> = fonts
            .files
            .iter()
            .filter_map(|f| Face::from_slice(&f.data, 0))
            .collect();
        let scale = faces
            .iter()
            .map(|f| 1000.0 / f.units_per_em().max(1) as f32)
            .collect();
        Shaper {
            faces,
            scale,
            plans: RefCell::new(HashMap::new()),
        }
    }

    /// The parsed face `face`.
    pub(super) fn face(&self, face: usize) -> &Face<'f> {
        &self.faces[face]
    }

    /// Thousandths of the font size per font unit of `face`.
    pub(super) fn scale(&self, face: usize) -> f32 {
        self.scale[face]
    }

    /// The font's own advance of glyph `id` of `face` (what the PDF's width table says), in
    /// thousandths of the font size.
    pub(super) fn advance(&self, face: usize, id: u16) -> f32 {
        self.faces[face]
            .glyph_hor_advance(rustybuzz::ttf_parser::GlyphId(id))
            .map_or(0.0, |a| f32::from(a) * self.scale[face])
    }

    fn covers(&self, family: usize, c: char) -> bool {
        self.faces
            .get(2 * family)
            .is_some_and(|f| f.glyph_index(c).is_some())
    }

    /// The family to set `c` in. A letter takes the first family that has it; anything else
    /// (a digit, a mark, punctuation) stays in the family before it when that family has it, so a
    /// Bengali danda or an Arabic comma is set with its words.
    fn family_for(&self, c: char, before: Option<usize>) -> usize {
        if !c.is_alphabetic() {
            if let Some(b) = before.filter(|b| self.covers(*b, c)) {
                return b;
            }
        }
        (0..FAMILIES.len())
            .find(|f| self.covers(*f, c))
            // No font has it: the first family's .notdef box is drawn, and the PDF still says
            // which character it was (see `Cluster::text`).
            .unwrap_or(0)
    }

    /// Shape a paragraph given as pieces of (bold, text). Whitespace is collapsed to one space
    /// between words, as in the HTML copy.
    pub(super) fn paragraph(&self, pieces: &[(bool, &str)]) -> Paragraph {
        let mut text = String::new();
        let mut bold = Vec::new();
        for (b, piece) in pieces {
            for word in piece.split_whitespace() {
                if !text.is_empty() {
                    text.push(' ');
                    bold.push(*b);
                }
                text.push_str(word);
                bold.extend(std::iter::repeat_n(*b, word.len()));
            }
        }
        if text.is_empty() {
            return Paragraph {
                rtl: false,
                runs: Vec::new(),
            };
        }
        // The copy is an English document with people's own words in it: a paragraph with any
        // left-to-right letter ("About عائشہ خان", a note mixing scripts) reads left to right, as
        // the HTML copy does; one written wholly right to left reads right to left.
        let rtl = !text
            .chars()
            .any(|c| unicode_bidi::bidi_class(c) == BidiClass::L);
        let base = if rtl { Level::rtl() } else { Level::ltr() };
        let bidi = BidiInfo::new(&text, Some(base));

        // Cut into runs of one (level, bold, space, family).
        let mut runs = Vec::new();
        let mut start = 0;
        let mut key: Option<(u8, bool, bool, usize)> = None;
        let mut family = None;
        for (i, c) in text.char_indices() {
            let space = c == ' ';
            let f = if space {
                family.unwrap_or(0)
            } else {
                self.family_for(c, family)
            };
            family = Some(f);
            let k = (bidi.levels[i].number(), bold[i], space, f);
            if key.is_some_and(|old| old != k) {
                if let Some(old) = key {
                    runs.push(self.run(&text[start..i], old));
                }
                start = i;
            }
            key = Some(k);
        }
        if let Some(k) = key {
            runs.push(self.run(&text[start..], k));
        }
        Paragraph { rtl, runs }
    }

    fn run(&self, text: &str, (level, bold, space, family): (u8, bool, bool, usize)) -> Run {
        let face = 2 * family + usize::from(bold);
        let (glyphs, clusters) = self.shape(text, face, level % 2 == 1);
        Run {
            face,
            level,
            space,
            glyphs,
            clusters,
        }
    }

    /// Shape `text` in one face and direction; glyphs and clusters come out in visual order.
    pub(super) fn shape(&self, text: &str, face: usize, rtl: bool) -> (Vec<Glyph>, Vec<Cluster>) {
        let mut buffer = UnicodeBuffer::new();
        buffer.push_str(text);
        let direction = if rtl {
            Direction::RightToLeft
        } else {
            Direction::LeftToRight
        };
        buffer.set_direction(direction);
        buffer.guess_segment_properties();
        let script = buffer.script();
        // Right to left, the optional ligatures are left out (required ones, such as lam-alef, stay):
        // Noto Naskh's one-glyph "الله" would read back reversed in poppler, which lays a
        // ligature's letters out left to right before putting the line in reading order.
        let features = if rtl {
            vec![Feature::new(Tag::from_bytes(b"liga"), 0, ..)]
        } else {
            Vec::new()
        };
        let mut plans = self.plans.borrow_mut();
        let plan = plans.entry((face, rtl, script)).or_insert_with(|| {
            ShapePlan::new(&self.faces[face], direction, Some(script), None, &features)
        });
        let shaped = rustybuzz::shape_with_plan(&self.faces[face], plan, buffer);
        let scale = self.scale[face];
        let glyphs: Vec<Glyph> = shaped
            .glyph_infos()
            .iter()
            .zip(shaped.glyph_positions())
            .map(|(info, pos)| Glyph {
                id: u16::try_from(info.glyph_id).unwrap_or(0),
                advance: pos.x_advance as f32 * scale,
                x_offset: pos.x_offset as f32 * scale,
                y_offset: pos.y_offset as f32 * scale,
            })
            .collect();

        // A cluster's value is the byte where its characters start; they end where the next
        // cluster in reading order starts.
        let values: Vec<usize> = shaped
            .glyph_infos()
            .iter()
            .map(|i| i.cluster as usize)
            .collect();
        let mut starts = values.clone();
        starts.sort_unstable();
        starts.dedup();
        let end_of = |v: usize| {
            starts
                .iter()
                .find(|s| **s > v)
                .copied()
                .unwrap_or(text.len())
        };
        let mut clusters: Vec<Cluster> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            match clusters.last_mut() {
                Some(c) if values[c.glyphs.start] == *v => c.glyphs.end = i + 1,
                _ => clusters.push(Cluster {
                    glyphs: i..i + 1,
                    text: text.get(*v..end_of(*v)).unwrap_or_default().to_string(),
                }),
            }
        }
        (glyphs, clusters)
    }
}

/// The order to draw a line's runs in, left to right, from their levels (rule L2 of the Unicode
/// bidirectional algorithm: from the highest level down to the lowest odd one, reverse every
/// stretch at that level or higher).
pub(crate) fn visual_order(levels: &[u8]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..levels.len()).collect();
    let Some(&highest) = levels.iter().max() else {
        return order;
    };
    let lowest_odd = levels.iter().min().map_or(1, |l| l | 1);
    let mut level = highest;
    while level >= lowest_odd {
        let mut i = 0;
        while i < order.len() {
            if levels[order[i]] >= level {
                let start = i;
                while i < order.len() && levels[order[i]] >= level {
                    i += 1;
                }
                order[start..i].reverse();
            } else {
                i += 1;
            }
        }
        level -= 1;
    }
    order
}
