//! The person's copy as a PDF: A4 pages, simple line breaking and a page footer, written with
//! `pdf-writer` (a small maintained crate with no system dependencies).
//!
//! Every character prints as itself: the text is shaped ([`text`]) in the Noto fonts
//! ([`super::fonts`]), set in visual order for right-to-left runs, and the glyphs used are
//! embedded as font subsets with a map back to the text ([`embed`]), so what a reader copies out
//! or reads aloud is what was written.

mod embed;
mod text;

use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use self::embed::{resource_name, FaceRefs, Glyphs};
use self::text::{visual_order, Paragraph, Run, Shaper};
use super::fonts::Fonts;
use super::{Block, Layout, Style};
use crate::export::ExportError;

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 56.0;
const BOTTOM: f32 = 64.0;

/// How each style is set.
struct Look {
    size: f32,
    bold: bool,
    indent: f32,
    before: f32,
    gray: f32,
    red: bool,
    bar: bool,
}

fn look(style: Style) -> Look {
    let base = Look {
        size: 10.5,
        bold: false,
        indent: 0.0,
        before: 3.0,
        gray: 0.1,
        red: false,
        bar: false,
    };
    match style {
        Style::Title => Look {
            size: 20.0,
            bold: true,
            before: 0.0,
            ..base
        },
        Style::Heading => Look {
            size: 15.0,
            bold: true,
            before: 18.0,
            ..base
        },
        Style::Subheading => Look {
            size: 12.0,
            bold: true,
            before: 12.0,
            ..base
        },
        Style::Body => base,
        Style::Quote => Look {
            indent: 14.0,
            bar: true,
            ..base
        },
        Style::Small => Look {
            size: 9.0,
            gray: 0.35,
            ..base
        },
        Style::Error => Look {
            bold: true,
            red: true,
            ..base
        },
    }
}

/// One laid-out line of text.
struct Line {
    /// The left edge of the text column (a quote's bar stands just left of it).
    left: f32,
    /// Where the text starts (further right than `left` for a right-to-left paragraph).
    x: f32,
    y: f32,
    size: f32,
    gray: f32,
    red: bool,
    /// Runs in visual order, each with where it starts, from `x`.
    runs: Vec<(f32, Run)>,
    width: f32,
    struck: bool,
    bar: bool,
}

#[derive(Default)]
struct Page {
    lines: Vec<Line>,
}

/// A word and the space before it (none for a paragraph's first word).
struct Word {
    space: Option<Run>,
    runs: Vec<Run>,
}

impl Word {
    fn width(&self, size: f32) -> f32 {
        self.runs.iter().map(|r| r.width(size)).sum()
    }
}

struct Typesetter<'s, 'f> {
    shaper: &'s Shaper<'f>,
    pages: Vec<Page>,
    y: f32,
}

impl<'s, 'f> Typesetter<'s, 'f> {
    fn new(shaper: &'s Shaper<'f>) -> Self {
        Typesetter {
            shaper,
            pages: vec![Page::default()],
            y: PAGE_H - MARGIN,
        }
    }

    fn new_page(&mut self) {
        self.pages.push(Page::default());
        self.y = PAGE_H - MARGIN;
    }

    fn ensure(&mut self, height: f32) {
        if self.y - height < BOTTOM {
            self.new_page();
        }
    }

    fn block(&mut self, b: &Block) {
        let lk = look(b.style);
        let leading = lk.size * 1.35;
        let max = PAGE_W - 2.0 * MARGIN - lk.indent;
        let at_top = self.y >= PAGE_H - MARGIN;
        if !at_top {
            self.y -= lk.before;
        }
        // Keep headings with what follows them.
        let keep = match b.style {
            Style::Heading | Style::Subheading => leading + 3.0 * 14.0,
            _ => leading,
        };
        self.ensure(keep);

        for (i, hard) in b.text.split('\n').enumerate() {
            let mut pieces = Vec::new();
            if i == 0 {
                if let Some(label) = &b.label {
                    pieces.push((true, label.as_str()));
                }
            }
            pieces.push((lk.bold, hard));
            let para = self.shaper.paragraph(&pieces);
            if para.runs.is_empty() {
                self.ensure(leading);
                self.y -= leading;
                continue;
            }
            let rtl = para.rtl;
            for logical in wrap(words(para), max, lk.size) {
                self.ensure(leading);
                self.y -= leading;
                let (runs, width) = place(logical, lk.size);
                // A right-to-left paragraph reads from the right margin.
                let shift = if rtl { (max - width).max(0.0) } else { 0.0 };
                let y = self.y;
                if let Some(page) = self.pages.last_mut() {
                    page.lines.push(Line {
                        left: MARGIN + lk.indent,
                        x: MARGIN + lk.indent + shift,
                        y,
                        size: lk.size,
                        gray: lk.gray,
                        red: lk.red,
                        runs,
                        width,
                        struck: b.struck,
                        bar: lk.bar,
                    });
                }
            }
        }
    }
}

/// A paragraph's runs grouped into words, each with the space before it.
fn words(para: Paragraph) -> Vec<Word> {
    let mut out: Vec<Word> = Vec::new();
    let mut space = None;
    let mut current: Option<Word> = None;
    for run in para.runs {
        if run.space {
            if let Some(w) = current.take() {
                out.push(w);
            }
            space = Some(run);
        } else {
            current
                .get_or_insert_with(|| Word {
                    space: space.take(),
                    runs: Vec::new(),
                })
                .runs
                .push(run);
        }
    }
    out.extend(current);
    out
}

/// Greedy line breaking over words; a word longer than a line is cut between clusters. Lines come
/// out as runs in logical order, spaces included.
fn wrap(words: Vec<Word>, max: f32, size: f32) -> Vec<Vec<Run>> {
    let mut out = Vec::new();
    let mut line: Vec<Run> = Vec::new();
    let mut used = 0.0;
    for word in words {
        let space = word.space.as_ref().map_or(0.0, |s| s.width(size));
        let w = word.width(size);
        if !line.is_empty() && used + space + w > max {
            out.push(std::mem::take(&mut line));
            used = 0.0;
        }
        if !line.is_empty() {
            used += space;
            line.extend(word.space);
        }
        if w <= max - used {
            used += w;
            line.extend(word.runs);
            continue;
        }
        for mut run in word.runs {
            loop {
                let widths = run.cluster_widths(size);
                let mut fit = 0;
                let mut taken = 0.0;
                while fit < widths.len() && used + taken + widths[fit] <= max {
                    taken += widths[fit];
                    fit += 1;
                }
                if fit == widths.len() {
                    used += taken;
                    line.push(run);
                    break;
                }
                // At least one cluster per line, so a line never stays empty.
                if fit == 0 && line.is_empty() {
                    fit = 1;
                }
                let (head, rest) = run.split(fit);
                if !head.clusters.is_empty() {
                    line.push(head);
                }
                out.push(std::mem::take(&mut line));
                used = 0.0;
                run = rest;
            }
        }
    }
    if !line.is_empty() {
        out.push(line);
    }
    out
}

/// Put a line's runs in visual order with their positions; returns them and the line's width.
fn place(logical: Vec<Run>, size: f32) -> (Vec<(f32, Run)>, f32) {
    let levels: Vec<u8> = logical.iter().map(|r| r.level).collect();
    let mut slots: Vec<Option<Run>> = logical.into_iter().map(Some).collect();
    let mut x = 0.0;
    let mut runs = Vec::with_capacity(slots.len());
    for i in visual_order(&levels) {
        if let Some(run) = slots[i].take() {
            let w = run.width(size);
            runs.push((x, run));
            x += w;
        }
    }
    (runs, x)
}

/// One piece of a TJ array: glyph ids to show, or a move (thousandths of the font size, to the
/// left when positive, as TJ counts).
enum Piece {
    Glyphs(Vec<u8>),
    Move(f32),
}

/// Write the glyphs of `run` at the current pen. The pen starts at the run's left end.
fn show_run(c: &mut Content, run: &Run, size: f32, glyphs: &mut Glyphs, shaper: &Shaper<'_>) {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut rise = 0.0;
    let flush = |c: &mut Content, pieces: &mut Vec<Piece>| {
        if pieces.is_empty() {
            return;
        }
        let mut tj = c.show_positioned();
        let mut items = tj.items();
        for p in pieces.drain(..) {
            match p {
                Piece::Glyphs(ids) => {
                    items.show(Str(&ids));
                }
                Piece::Move(m) => {
                    items.adjust(m);
                }
            }
        }
        items.finish();
        tj.finish();
    };
    for cluster in &run.clusters {
        let shaped = &run.glyphs[cluster.glyphs.clone()];
        let ids: Vec<u16> = shaped.iter().map(|g| glyphs.id(run.face, g.id)).collect();
        // One glyph whose ToUnicode entry can say this cluster's text needs nothing more.
        let plain = ids.len() == 1 && glyphs.claim(run.face, ids[0], &cluster.text);
        if !plain {
            flush(c, &mut pieces);
            c.begin_marked_content_with_properties(Name(b"Span"))
                .properties()
                .actual_text(TextStr(&cluster.text));
        }
        for (g, id) in shaped.iter().zip(&ids) {
            let r = g.y_offset * size / 1000.0;
            if (r - rise).abs() > 0.001 {
                flush(c, &mut pieces);
                c.set_rise(r);
                rise = r;
            }
            // TJ moves the pen by the font's own width of each glyph; correct it to the shaped
            // advance, and draw the glyph at its offset.
            let own = shaper.advance(run.face, g.id);
            if g.x_offset.abs() > 0.01 {
                pieces.push(Piece::Move(-g.x_offset));
            }
            match pieces.last_mut() {
                Some(Piece::Glyphs(b)) => b.extend(id.to_be_bytes()),
                _ => pieces.push(Piece::Glyphs(id.to_be_bytes().to_vec())),
            }
            let correction = g.advance - g.x_offset - own;
            if correction.abs() > 0.01 {
                pieces.push(Piece::Move(-correction));
            }
        }
        if !plain {
            flush(c, &mut pieces);
            c.end_marked_content();
        }
    }
    flush(c, &mut pieces);
    if rise != 0.0 {
        c.set_rise(0.0);
    }
}

fn draw_line(c: &mut Content, l: &Line, glyphs: &mut Glyphs, shaper: &Shaper<'_>) {
    c.begin_text();
    for (dx, run) in &l.runs {
        c.set_font(resource_name(run.face), l.size);
        c.set_text_matrix([1.0, 0.0, 0.0, 1.0, l.x + dx, l.y]);
        show_run(c, run, l.size, glyphs, shaper);
    }
    c.end_text();
}

fn draw(page: &Page, footer: &Line, glyphs: &mut Glyphs, shaper: &Shaper<'_>) -> Vec<u8> {
    let mut c = Content::new();
    for l in &page.lines {
        if l.red {
            c.set_fill_rgb(0.54, 0.08, 0.22);
        } else {
            c.set_fill_gray(l.gray);
        }
        draw_line(&mut c, l, glyphs, shaper);
        if l.struck {
            let y = l.y + l.size * 0.3;
            c.set_stroke_gray(0.2);
            c.set_line_width(0.8);
            c.move_to(l.x, y);
            c.line_to(l.x + l.width, y);
            c.stroke();
        }
        if l.bar {
            c.set_stroke_gray(0.65);
            c.set_line_width(2.0);
            c.move_to(l.left - 8.0, l.y - l.size * 0.3);
            c.line_to(l.left - 8.0, l.y + l.size * 1.05);
            c.stroke();
        }
    }
    c.set_fill_gray(0.35);
    draw_line(&mut c, footer, glyphs, shaper);
    c.finish().to_vec()
}

/// The page footer: the title and the page number, on one line.
fn footer(shaper: &Shaper<'_>, text: &str) -> Line {
    let size = 8.5;
    let logical = shaper.paragraph(&[(false, text)]).runs;
    let (runs, width) = place(logical, size);
    Line {
        left: MARGIN,
        x: MARGIN,
        y: 32.0,
        size,
        gray: 0.35,
        red: false,
        runs,
        width,
        struck: false,
        bar: false,
    }
}

/// Hands out object ids in order.
struct Refs(i32);

impl Refs {
    fn next(&mut self) -> Ref {
        self.0 += 1;
        Ref::new(self.0)
    }
}

pub(super) fn render(l: &Layout, fonts: &Fonts) -> Result<Vec<u8>, ExportError> {
    let shaper = Shaper::new(fonts);
    let mut t = Typesetter::new(&shaper);
    for b in &l.blocks {
        t.block(b);
    }

    let mut refs = Refs(0);
    let catalog = refs.next();
    let tree = refs.next();
    let info = refs.next();
    let faces: Vec<FaceRefs> = (0..fonts.files.len())
        .map(|_| FaceRefs {
            type0: refs.next(),
            cid: refs.next(),
            descriptor: refs.next(),
            cmap: refs.next(),
            file: refs.next(),
        })
        .collect();
    let page_ids: Vec<(Ref, Ref)> = t.pages.iter().map(|_| (refs.next(), refs.next())).collect();

    // The content first: it decides which glyphs of which faces are embedded.
    let mut glyphs = Glyphs::new(fonts.files.len());
    let total = t.pages.len();
    let mut contents = Vec::with_capacity(total);
    for (i, page) in t.pages.iter().enumerate() {
        let foot = footer(&shaper, &format!("{} - page {} of {total}", l.title, i + 1));
        contents.push(draw(page, &foot, &mut glyphs, &shaper));
    }
    let used: Vec<usize> = glyphs.faces().collect();

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().map(|(p, _)| *p))
        .count(i32::try_from(page_ids.len()).unwrap_or(i32::MAX));
    pdf.document_info(info)
        .title(TextStr(&l.title))
        .producer(TextStr("Polyphony"));
    for ((page_id, content_id), content) in page_ids.iter().zip(&contents) {
        let mut p = pdf.page(*page_id);
        p.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
        p.parent(tree);
        p.contents(*content_id);
        let mut resources = p.resources();
        let mut dict = resources.fonts();
        for face in &used {
            dict.pair(resource_name(*face), faces[*face].type0);
        }
        dict.finish();
        resources.finish();
        p.finish();
        pdf.stream(*content_id, &embed::deflate(content))
            .filter(Filter::FlateDecode);
    }
    glyphs.write(&mut pdf, fonts, &shaper, |face| faces[face])?;
    Ok(pdf.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::{fonts, pdf_text};

    fn line_words(shaper: &Shaper<'_>, text: &str) -> Vec<Word> {
        words(shaper.paragraph(&[(false, text)]))
    }

    #[test]
    fn export_pdf_wraps_within_the_page_and_cuts_long_words() {
        let shaper = Shaper::new(fonts());
        let lines = wrap(
            line_words(&shaper, "one two three four five six seven eight nine ten"),
            80.0,
            10.0,
        );
        assert!(lines.len() > 2);
        for l in lines {
            let (_, w) = place(l, 10.0);
            assert!(w <= 80.0, "{w}");
        }
        let long = wrap(line_words(&shaper, &"W".repeat(200)), 100.0, 10.0);
        assert!(
            long.len() > 10,
            "a long word is cut rather than running off the page"
        );
        for l in long {
            assert!(place(l, 10.0).1 <= 100.0);
        }
    }

    #[test]
    fn export_pdf_shapes_complex_scripts() {
        let shaper = Shaper::new(fonts());
        // Arabic: letters take their joined forms; lam-alef is drawn as one shape (in Noto Naskh
        // a lam form carrying a zero-width alef), and reads back in logical order.
        let para = shaper.paragraph(&[(false, "لا بيت")]);
        assert!(para.rtl);
        let run = &para.runs[0];
        let face = shaper.face(run.face);
        let nominal: Vec<u16> = "لابيت"
            .chars()
            .filter_map(|c| face.glyph_index(c).map(|g| g.0))
            .collect();
        assert_eq!(nominal.len(), 5);
        assert!(
            run.glyphs.iter().all(|g| !nominal.contains(&g.id)),
            "every letter takes a joined form: {run:?}"
        );
        let read: String = run.clusters.iter().rev().map(|c| c.text.as_str()).collect();
        assert_eq!(read, "لا");
        // Bengali: in কি the vowel sign is drawn before the consonant, one cluster of two glyphs
        // that reads back in its logical order.
        let run = &shaper.paragraph(&[(false, "কি")]).runs[0];
        assert_eq!(run.clusters.len(), 1, "{run:?}");
        assert_eq!(run.clusters[0].text, "কি");
        let face = shaper.face(run.face);
        assert_eq!(
            face.glyph_index('ি').map(|g| g.0),
            Some(run.glyphs[0].id),
            "the vowel sign comes first"
        );
    }

    #[test]
    fn export_pdf_orders_right_to_left_runs_visually() {
        assert_eq!(visual_order(&[0, 1, 1, 1, 0]), vec![0, 3, 2, 1, 4]);
        assert_eq!(visual_order(&[1, 1, 2, 2, 1]), vec![4, 2, 3, 1, 0]);
        assert_eq!(visual_order(&[0, 0]), vec![0, 1]);
    }

    #[test]
    fn export_pdf_breaks_pages_and_numbers_them() {
        let mut l = Layout {
            title: "Test".into(),
            blocks: Vec::new(),
        };
        for i in 0..200 {
            l.blocks.push(Block {
                style: Style::Body,
                label: None,
                text: format!("Line {i}"),
                struck: i % 2 == 0,
            });
        }
        let bytes = render(&l, fonts()).unwrap();
        assert!(bytes.starts_with(b"%PDF-"));
        let raw = String::from_utf8_lossy(&bytes);
        assert!(
            raw.contains("/Count 4") || raw.contains("/Count 5"),
            "{}",
            raw.len()
        );
        let text = pdf_text(&bytes);
        assert!(text.contains("Test - page 1 of"), "{text}");
        assert!(text.contains("Line 199"), "{text}");
    }
}
