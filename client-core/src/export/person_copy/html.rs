//! The person's copy as one HTML page: inline CSS, no scripts, no images, no links out, so it
//! opens the same on any device, offline, and prints cleanly.

use super::{Block, Layout, Style};

const CSS: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif;
       max-width: 46rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.55; color: #1d1d1b;
       font-size: 1.05rem; }
h1 { font-size: 1.9rem; margin-bottom: 0.5rem; }
h2 { font-size: 1.4rem; margin-top: 2.2rem; border-bottom: 2px solid #005eb8; padding-bottom: 0.2rem; }
h3 { font-size: 1.15rem; margin: 1.6rem 0 0.4rem; }
p { margin: 0.35rem 0; }
.quote { white-space: pre-wrap; border-left: 4px solid #aeb7bd; padding: 0.2rem 0 0.2rem 0.8rem;
         margin: 0.3rem 0 0.6rem; }
.small { color: #4c6272; font-size: 0.9rem; }
.error { color: #8a1538; font-weight: 600; }
.struck, .struck * { color: #5f6b73; }
s { text-decoration-thickness: 2px; }
@media print {
  body { margin: 0; max-width: none; font-size: 11pt; color: #000; }
  h2 { break-after: avoid; page-break-after: avoid; }
  h3 { break-after: avoid; page-break-after: avoid; }
  .quote { break-inside: avoid; page-break-inside: avoid; }
  .error { color: #000; }
}
";

pub(crate) use crate::export::escape_html as escape;

fn block(b: &Block) -> String {
    let text = escape(&b.text);
    let text = if b.style == Style::Quote {
        text
    } else {
        text.replace('\n', "<br>")
    };
    let label = b
        .label
        .as_ref()
        .map(|l| format!("<strong>{}</strong> ", escape(l)))
        .unwrap_or_default();
    let inner = if b.struck && !text.is_empty() {
        format!("{label}<s>{text}</s>")
    } else {
        format!("{label}{text}")
    };
    let struck = if b.struck { " struck" } else { "" };
    match b.style {
        Style::Title => format!("<h1>{inner}</h1>"),
        Style::Heading => format!("<h2>{inner}</h2>"),
        // A person's own words may be in Arabic or Urdu: `dir="auto"` sets each paragraph right to
        // left when its first strong letter is, as the PDF copy does.
        Style::Subheading => format!("<h3 class=\"entry{struck}\" dir=\"auto\">{inner}</h3>"),
        Style::Body => format!("<p class=\"body{struck}\" dir=\"auto\">{inner}</p>"),
        Style::Quote => format!("<p class=\"quote{struck}\" dir=\"auto\">{inner}</p>"),
        Style::Small => format!("<p class=\"small{struck}\">{inner}</p>"),
        Style::Error => format!("<p class=\"error\" role=\"note\">{inner}</p>"),
    }
}

pub(super) fn body(l: &Layout) -> String {
    let mut out = String::new();
    for b in &l.blocks {
        out.push_str(&block(b));
        out.push('\n');
    }
    out
}

pub(super) fn render(l: &Layout) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en-GB\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!("<title>{}</title>\n", escape(&l.title)));
    out.push_str(&format!("<style>{CSS}</style>\n</head>\n<body>\n<main>\n"));
    out.push_str(&body(l));
    out.push_str("</main>\n</body>\n</html>\n");
    out
}
