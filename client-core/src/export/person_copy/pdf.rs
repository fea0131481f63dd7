//! The person's copy as a PDF: A4 pages, the PDF base fonts Helvetica and Helvetica-Bold (every
//! PDF reader has them, so no font file is embedded or needed), simple line breaking, and a page
//! footer. Written with `pdf-writer`, a small maintained crate with no system dependencies.
//!
//! Text is encoded as Windows-1252 (`WinAnsiEncoding`), the base fonts' character set; anything
//! outside it prints as `?`. The HTML copy shows every character.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use super::metrics::{HELVETICA, HELVETICA_BOLD};
use super::{Block, Layout, Style};

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 56.0;
const BOTTOM: f32 = 64.0;
const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// Unicode characters of Windows-1252's 0x80-0x9F range (elsewhere it equals Latin-1).
const CP1252_HIGH: [(char, u8); 27] = [
    ('€', 0x80),
    ('‚', 0x82),
    ('ƒ', 0x83),
    ('„', 0x84),
    ('…', 0x85),
    ('†', 0x86),
    ('‡', 0x87),
    ('ˆ', 0x88),
    ('‰', 0x89),
    ('Š', 0x8A),
    ('‹', 0x8B),
    ('Œ', 0x8C),
    ('Ž', 0x8E),
    ('\u{2018}', 0x91),
    ('\u{2019}', 0x92),
    ('\u{201C}', 0x93),
    ('\u{201D}', 0x94),
    ('•', 0x95),
    ('–', 0x96),
    ('—', 0x97),
    ('˜', 0x98),
    ('™', 0x99),
    ('š', 0x9A),
    ('›', 0x9B),
    ('œ', 0x9C),
    ('ž', 0x9E),
    ('Ÿ', 0x9F),
];

/// Encode text as WinAnsi bytes; characters the base fonts lack become `?`.
pub(crate) fn encode(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c as u32 {
            0x20..=0x7E | 0xA0..=0xFF => c as u8,
            0x09 => b' ',
            _ => CP1252_HIGH
                .iter()
                .find(|(u, _)| *u == c)
                .map(|(_, b)| *b)
                .unwrap_or(b'?'),
        })
        .collect()
}

fn width(bytes: &[u8], bold: bool, size: f32) -> f32 {
    let table = if bold { &HELVETICA_BOLD } else { &HELVETICA };
    let units: u32 = bytes
        .iter()
        .map(|b| match b.checked_sub(32) {
            Some(i) => match table[usize::from(i)] {
                0 => 278,
                w => u32::from(w),
            },
            None => 278,
        })
        .sum();
    units as f32 * size / 1000.0
}

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
    x: f32,
    y: f32,
    size: f32,
    gray: f32,
    red: bool,
    runs: Vec<(bool, Vec<u8>)>,
    width: f32,
    struck: bool,
    bar: bool,
}

#[derive(Default)]
struct Page {
    lines: Vec<Line>,
}

struct Typesetter {
    pages: Vec<Page>,
    y: f32,
}

impl Typesetter {
    fn new() -> Self {
        Typesetter {
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

        let mut words: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut lines: Vec<Vec<(bool, Vec<u8>)>> = Vec::new();
        if let Some(label) = &b.label {
            words.extend(label.split_whitespace().map(|w| (true, encode(w))));
        }
        for (i, hard) in b.text.split('\n').enumerate() {
            if i > 0 {
                lines.push(std::mem::take(&mut words));
            }
            words.extend(hard.split_whitespace().map(|w| (lk.bold, encode(w))));
        }
        lines.push(words);

        for hard in lines {
            if hard.is_empty() {
                self.ensure(leading);
                self.y -= leading;
                continue;
            }
            for visual in wrap(hard, max, lk.size) {
                self.ensure(leading);
                self.y -= leading;
                let runs = merge(visual);
                let w = runs.iter().map(|(bd, t)| width(t, *bd, lk.size)).sum();
                let y = self.y;
                if let Some(page) = self.pages.last_mut() {
                    page.lines.push(Line {
                        x: MARGIN + lk.indent,
                        y,
                        size: lk.size,
                        gray: lk.gray,
                        red: lk.red,
                        runs,
                        width: w,
                        struck: b.struck,
                        bar: lk.bar,
                    });
                }
            }
        }
    }
}

/// Greedy line breaking; a word longer than a line is cut.
fn wrap(words: Vec<(bool, Vec<u8>)>, max: f32, size: f32) -> Vec<Vec<(bool, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut line: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut used = 0.0;
    for (bold, word) in words {
        let space = if line.is_empty() {
            0.0
        } else {
            width(b" ", bold, size)
        };
        let w = width(&word, bold, size);
        if !line.is_empty() && used + space + w > max {
            out.push(std::mem::take(&mut line));
            used = 0.0;
        }
        if w > max {
            let mut piece = Vec::new();
            for byte in word {
                if !piece.is_empty() && width(&piece, bold, size) + width(&[byte], bold, size) > max
                {
                    out.push(vec![(bold, std::mem::take(&mut piece))]);
                }
                piece.push(byte);
            }
            used = width(&piece, bold, size);
            line.push((bold, piece));
            continue;
        }
        used += if line.is_empty() { w } else { space + w };
        line.push((bold, word));
    }
    if !line.is_empty() {
        out.push(line);
    }
    out
}

/// Join a line's words into runs of one font each, with the spaces between them.
fn merge(words: Vec<(bool, Vec<u8>)>) -> Vec<(bool, Vec<u8>)> {
    let mut runs: Vec<(bool, Vec<u8>)> = Vec::new();
    for (bold, word) in words {
        match runs.last_mut() {
            Some((b, text)) if *b == bold => {
                text.push(b' ');
                text.extend(word);
            }
            Some((_, text)) => {
                text.push(b' ');
                runs.push((bold, word));
            }
            None => runs.push((bold, word)),
        }
    }
    runs
}

fn draw(page: &Page, footer: &[u8]) -> Vec<u8> {
    let mut c = Content::new();
    for l in &page.lines {
        if l.red {
            c.set_fill_rgb(0.54, 0.08, 0.22);
        } else {
            c.set_fill_gray(l.gray);
        }
        c.begin_text();
        c.next_line(l.x, l.y);
        for (bold, text) in &l.runs {
            c.set_font(if *bold { BOLD } else { REGULAR }, l.size);
            c.show(Str(text));
        }
        c.end_text();
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
            c.move_to(l.x - 8.0, l.y - l.size * 0.3);
            c.line_to(l.x - 8.0, l.y + l.size * 1.05);
            c.stroke();
        }
    }
    c.set_fill_gray(0.35);
    c.begin_text();
    c.set_font(REGULAR, 8.5);
    c.next_line(MARGIN, 32.0);
    c.show(Str(footer));
    c.end_text();
    c.finish().to_vec()
}

pub(super) fn render(l: &Layout) -> Vec<u8> {
    let mut t = Typesetter::new();
    for b in &l.blocks {
        t.block(b);
    }

    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let page_ids: Vec<(Ref, Ref)> = (0..t.pages.len() as i32)
        .map(|i| (Ref::new(10 + 2 * i), Ref::new(11 + 2 * i)))
        .collect();

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().map(|(p, _)| *p))
        .count(page_ids.len() as i32);
    pdf.type1_font(regular)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.document_info(info)
        .title(TextStr(&l.title))
        .producer(TextStr("Polyphony"));

    let total = page_ids.len();
    for (i, (page, (page_id, content_id))) in t.pages.iter().zip(&page_ids).enumerate() {
        let mut p = pdf.page(*page_id);
        p.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
        p.parent(tree);
        p.contents(*content_id);
        p.resources()
            .fonts()
            .pair(REGULAR, regular)
            .pair(BOLD, bold);
        p.finish();
        let footer = encode(&format!("{} - page {} of {total}", l.title, i + 1));
        pdf.stream(*content_id, &draw(page, &footer));
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_pdf_text_is_winansi_and_wraps_within_the_page() {
        assert_eq!(
            encode("María – “ok” €"),
            b"Mar\xEDa \x96 \x93ok\x94 \x80".to_vec()
        );
        assert_eq!(encode("名前"), b"??".to_vec());
        let words: Vec<(bool, Vec<u8>)> = "one two three four five six seven eight nine ten"
            .split(' ')
            .map(|w| (false, encode(w)))
            .collect();
        let lines = wrap(words, 80.0, 10.0);
        assert!(lines.len() > 2);
        for l in &lines {
            let w: f32 = merge(l.clone())
                .iter()
                .map(|(b, t)| width(t, *b, 10.0))
                .sum();
            assert!(w <= 80.0, "{w}");
        }
        let long = wrap(vec![(false, vec![b'W'; 200])], 100.0, 10.0);
        assert!(
            long.len() > 10,
            "a long word is cut rather than running off the page"
        );
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
        let bytes = render(&l);
        assert!(bytes.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("/Count 4") || text.contains("/Count 5"),
            "{}",
            text.len()
        );
        assert!(text.contains("page 1 of"));
    }
}
