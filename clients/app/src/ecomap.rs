//! The ecomap: the person's network drawn as a picture, which people read faster than a list.
//!
//! The person is in the centre. Members sit around them in sectors by role (family, friends,
//! professionals, peers, others), so the shape of the network shows at a glance: a map that is
//! all professionals and no family tells its own story. A solid line joins the person to each member
//! who has come to a meeting, thicker the more often they came; a dashed line means invited but not
//! yet come. Members who left are drawn faded; entries marked entered in error are left off the map
//! (the list beside it still shows them, struck through).
//!
//! Every name is drawn whole: a long name is broken onto two lines at a space, never cut. Labels
//! sit beside their member on the side away from the person (left of a member on the left, right
//! of one on the right), and on each side they are stacked so that none overlaps another; the
//! drawing is then sized to hold every label, so nothing falls off its edge. Text widths are
//! estimated from the font size (there is no font engine on the server), generously.
//!
//! It is server-rendered SVG, so it works without JavaScript and prints. For people who cannot see
//! it, the SVG has a `<title>` and a `<desc>` that says the same in words, and the page shows the
//! same network as a table.

use std::f64::consts::PI;
use std::fmt::Write as _;

use polyphony_core::model::view::{CaseView, MemberView};
use polyphony_core::model::{Participant, Role};

use crate::html::esc;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 560.0;
const CX: f64 = 380.0;
/// Font sizes, as in `app.css` (`.app-ecomap__name`, `__relationship`, `__sector`,
/// `__person-name`).
const NAME_PX: f64 = 15.0;
const RELATIONSHIP_PX: f64 = 13.0;
const SECTOR_PX: f64 = 15.0;
const PERSON_PX: f64 = 17.0;
/// A generous average advance of Arial (bold) per character, in ems: estimated boxes are wider
/// than the text, so boxes that do not meet mean text that does not meet.
const CHAR_EM: f64 = 0.62;
/// A line's height, in ems.
const LINE_EM: f64 = 1.25;
/// The longest line a name or relationship keeps before it is broken at a space.
const WRAP_AT: usize = 18;
/// Space kept between labels, and around the drawing.
const GAP: f64 = 6.0;
const MARGIN: f64 = 12.0;
const CY: f64 = 288.0;
const RING: f64 = 165.0;
const NODE_R: f64 = 26.0;
/// Sector names sit outside the ring of members, clear of their labels.
const SECTOR_LABEL_R: f64 = 268.0;

/// The role sectors, clockwise from the top: `(stored role, label)`.
pub const SECTORS: [(Role, &str); 5] = [
    (Role::Family, "Family"),
    (Role::Friend, "Friends"),
    (Role::Professional, "Professionals"),
    (Role::Peer, "Peers"),
    (Role::Other, "Others"),
];

/// One member placed on the map.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Member id.
    pub id: String,
    /// Their name.
    pub name: String,
    /// Their relationship, in the person's words.
    pub relationship: String,
    /// Index into [`SECTORS`].
    pub sector: usize,
    /// Centre of the node.
    pub x: f64,
    /// Centre of the node.
    pub y: f64,
    /// Meetings they came to (entries in error not counted).
    pub attended: usize,
    /// True if they left the network.
    pub left: bool,
}

/// A rectangle on the drawing: `x0 <= x1`, `y0 <= y1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Box2 {
    /// Left.
    pub x0: f64,
    /// Top.
    pub y0: f64,
    /// Right.
    pub x1: f64,
    /// Bottom.
    pub y1: f64,
}

impl Box2 {
    /// True if the two overlap (touching edges do not count).
    pub fn intersects(&self, o: &Box2) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    /// True if `o` lies wholly inside this box.
    pub fn contains(&self, o: &Box2) -> bool {
        self.x0 <= o.x0 && o.x1 <= self.x1 && self.y0 <= o.y0 && o.y1 <= self.y1
    }

    fn union(&self, o: &Box2) -> Box2 {
        Box2 {
            x0: self.x0.min(o.x0),
            y0: self.y0.min(o.y0),
            x1: self.x1.max(o.x1),
            y1: self.y1.max(o.y1),
        }
    }
}

/// Which side of its x a label's text is drawn on (SVG `text-anchor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// The text starts at x (a label right of its member).
    Start,
    /// The text is centred on x.
    Middle,
    /// The text ends at x (a label left of its member).
    End,
}

/// One line of a label.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelLine {
    /// The words, whole.
    pub text: String,
    /// Its CSS class.
    pub class: &'static str,
    /// Its font size in px.
    pub px: f64,
}

/// Text placed on the drawing: a member's name and relationship, or a sector's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// Its lines, top to bottom.
    pub lines: Vec<LabelLine>,
    /// Where the text is anchored.
    pub anchor: Anchor,
    /// The anchor's x.
    pub x: f64,
    /// The top of the first line.
    pub top: f64,
}

impl Label {
    fn width(&self) -> f64 {
        self.lines
            .iter()
            .map(|l| text_width(&l.text, l.px))
            .fold(0.0, f64::max)
    }

    fn height(&self) -> f64 {
        self.lines.iter().map(|l| l.px * LINE_EM).sum()
    }

    /// The box the label's text takes (estimated, generously).
    pub fn bbox(&self) -> Box2 {
        let w = self.width();
        let x0 = match self.anchor {
            Anchor::Start => self.x,
            Anchor::Middle => self.x - w / 2.0,
            Anchor::End => self.x - w,
        };
        Box2 {
            x0,
            y0: self.top,
            x1: x0 + w,
            y1: self.top + self.height(),
        }
    }
}

/// The estimated width of `text` at `px`.
fn text_width(text: &str, px: f64) -> f64 {
    text.chars().count() as f64 * px * CHAR_EM
}

/// `text` whole, on one line, or on two broken at the space that makes the longer line
/// shortest. A name is never cut: a single long word stays on its line, and the drawing widens.
fn wrap(text: &str) -> Vec<String> {
    let t = text.trim();
    if t.chars().count() <= WRAP_AT {
        return vec![t.to_string()];
    }
    let best = t
        .char_indices()
        .filter(|(_, c)| *c == ' ')
        .map(|(i, _)| {
            let (a, b) = (&t[..i], &t[i + 1..]);
            (a.chars().count().max(b.chars().count()), i)
        })
        .min();
    match best {
        Some((_, i)) => vec![t[..i].trim().to_string(), t[i + 1..].trim().to_string()],
        None => vec![t.to_string()],
    }
}

/// The laid-out map.
#[derive(Debug, Clone, PartialEq)]
pub struct Ecomap {
    /// The person's name as they like to be called.
    pub person: String,
    /// Members on the map.
    pub nodes: Vec<Node>,
    /// Each member's label, in the order of `nodes`.
    pub labels: Vec<Label>,
    /// The sectors' names, in the order of [`SECTORS`].
    pub sector_labels: Vec<Label>,
    /// The person's name in the centre, whole.
    pub person_label: Label,
    /// The radius of the person's circle (wide enough for their name).
    pub person_r: f64,
    /// The drawing's extent (the SVG's `viewBox`): every label lies inside it.
    pub view: Box2,
}

/// How many meetings a participant key attended: held ones only (not in error; a planned,
/// cancelled or missed meeting was not attended by anyone).
pub fn meetings_attended(view: &CaseView, who: Participant) -> usize {
    view.meetings
        .iter()
        .filter(|m| m.meta.entered_in_error.is_none() && m.held())
        .filter(|m| m.attendees.iter().any(|a| a.is(who)))
        .count()
}

fn sector_of(m: &MemberView) -> usize {
    SECTORS
        .iter()
        .position(|(r, _)| m.role.is(*r))
        .unwrap_or(SECTORS.len() - 1)
}

fn point(angle_deg: f64, r: f64) -> (f64, f64) {
    let a = (angle_deg - 90.0) * PI / 180.0;
    (CX + r * a.cos(), CY + r * a.sin())
}

/// Where a sector's name goes: beyond the ring of members. The two side sectors (friends,
/// others) have their members' labels at the height their name would take on the ring, so their
/// names sit further out to the side instead.
fn sector_label_at(sector: usize) -> (f64, f64) {
    let angle = sector as f64 * 72.0;
    match sector {
        1 | 4 => {
            let (_, y) = point(angle, RING);
            let side = if sector == 1 { 1.0 } else { -1.0 };
            (CX + side * 304.0, y + 5.0)
        }
        _ => point(angle, SECTOR_LABEL_R),
    }
}

fn initials(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect()
}

/// A member's label: their whole name (on two lines if long), then their relationship, beside
/// the node on the side away from the person and level with it. A member straight above or below
/// the person counts as on the right.
fn member_label(n: &Node) -> Label {
    let mut lines: Vec<LabelLine> = wrap(&n.name)
        .into_iter()
        .map(|text| LabelLine {
            text,
            class: "app-ecomap__name",
            px: NAME_PX,
        })
        .collect();
    let relationship = format!("{}{}", n.relationship, if n.left { " (left)" } else { "" });
    lines.extend(wrap(&relationship).into_iter().map(|text| LabelLine {
        text,
        class: "app-ecomap__relationship",
        px: RELATIONSHIP_PX,
    }));
    let (anchor, x) = if n.x >= CX {
        (Anchor::Start, n.x + NODE_R + GAP)
    } else {
        (Anchor::End, n.x - NODE_R - GAP)
    };
    let mut l = Label {
        lines,
        anchor,
        x,
        top: 0.0,
    };
    l.top = n.y - l.height() / 2.0;
    l
}

/// A sector's name, where [`sector_label_at`] puts it: centred on the centre line (family, at
/// the top), otherwise on its own side, beginning or ending where it was centred.
fn sector_label(sector: usize) -> Label {
    let (x, baseline) = sector_label_at(sector);
    let text = SECTORS[sector].1.to_string();
    let w = text_width(&text, SECTOR_PX);
    let (anchor, x) = if (x - CX).abs() < 1.0 {
        (Anchor::Middle, x)
    } else if x > CX {
        (Anchor::Start, x - w / 2.0)
    } else {
        (Anchor::End, x + w / 2.0)
    };
    Label {
        lines: vec![LabelLine {
            text,
            class: "app-ecomap__sector",
            px: SECTOR_PX,
        }],
        anchor,
        x,
        top: baseline - SECTOR_PX,
    }
}

/// A label as SVG `<text>` lines, each baseline a line's height below the last.
fn label_svg(l: &Label, extra_class: &str) -> String {
    let anchor = match l.anchor {
        Anchor::Start => "start",
        Anchor::Middle => "middle",
        Anchor::End => "end",
    };
    let mut s = String::new();
    let mut top = l.top;
    for line in &l.lines {
        let baseline = top + line.px;
        let _ = write!(
            s,
            r#"<text class="{}{extra_class}" x="{:.1}" y="{baseline:.1}" text-anchor="{anchor}">{}</text>"#,
            line.class,
            l.x,
            esc(&line.text)
        );
        top += line.px * LINE_EM;
    }
    s
}

impl Ecomap {
    /// Lay out the network of a case.
    pub fn from_view(view: &CaseView) -> Ecomap {
        let person = view
            .person
            .preferred_name
            .clone()
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| view.person.name.clone());
        let members: Vec<&MemberView> = view
            .network
            .iter()
            .filter(|m| m.meta.entered_in_error.is_none())
            .collect();
        let mut nodes = Vec::new();
        for (s, _) in SECTORS.iter().enumerate() {
            let here: Vec<&&MemberView> = members.iter().filter(|m| sector_of(m) == s).collect();
            let n = here.len();
            let centre = s as f64 * 72.0;
            for (k, m) in here.iter().enumerate() {
                // Spread across the middle 56 degrees of the 72-degree sector; a crowded sector
                // alternates between two rings so labels do not collide.
                let angle = centre - 28.0 + 56.0 * (k as f64 + 0.5) / n as f64;
                let r = if n > 3 && k % 2 == 1 {
                    RING - 58.0
                } else {
                    RING
                };
                let (x, y) = point(angle, r);
                nodes.push(Node {
                    id: m.meta.id.to_string(),
                    name: m.name.clone(),
                    relationship: m.relationship.clone(),
                    sector: s,
                    x,
                    y,
                    attended: meetings_attended(view, Participant::Member(m.meta.id)),
                    left: m.left.is_some(),
                });
            }
        }
        let labels: Vec<Label> = nodes.iter().map(member_label).collect();
        let sector_labels: Vec<Label> = (0..SECTORS.len()).map(sector_label).collect();
        let person_lines = wrap(&person);
        let person_r = person_lines
            .iter()
            .map(|l| text_width(l, PERSON_PX) / 2.0 + 10.0)
            .fold(46.0, f64::max);
        let person_label = Label {
            top: CY - person_lines.len() as f64 * PERSON_PX * LINE_EM / 2.0,
            lines: person_lines
                .into_iter()
                .map(|text| LabelLine {
                    text,
                    class: "app-ecomap__person-name",
                    px: PERSON_PX,
                })
                .collect(),
            anchor: Anchor::Middle,
            x: CX,
        };
        let mut map = Ecomap {
            person,
            nodes,
            labels,
            sector_labels,
            person_label,
            person_r,
            view: Box2 {
                x0: 0.0,
                y0: 0.0,
                x1: WIDTH,
                y1: HEIGHT,
            },
        };
        map.separate();
        map.view = map.extent();
        map
    }

    /// Every label's box: the members', the sectors' and the person's.
    pub fn label_boxes(&self) -> Vec<Box2> {
        self.labels
            .iter()
            .chain(&self.sector_labels)
            .chain(std::iter::once(&self.person_label))
            .map(Label::bbox)
            .collect()
    }

    /// Stack the labels on each side of the person so that none overlaps another: in order of
    /// where each would like to be, each goes no higher than just below the one above it. Left
    /// labels end left of the centre and right labels start right of it (see [`member_label`]),
    /// so the two sides never meet; the person's name sits in the centre, between them, and the
    /// sector names on the centre line go above or below everything.
    fn separate(&mut self) {
        for side in [Anchor::End, Anchor::Start] {
            let mut order: Vec<(f64, usize, bool)> = self
                .labels
                .iter()
                .enumerate()
                .filter(|(_, l)| l.anchor == side)
                .map(|(i, l)| (l.top, i, false))
                .chain(
                    self.sector_labels
                        .iter()
                        .enumerate()
                        .filter(|(_, l)| l.anchor == side)
                        .map(|(i, l)| (l.top, i, true)),
                )
                .collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let person = self.person_label.bbox();
            let mut floor = f64::NEG_INFINITY;
            for (_, i, sector) in order {
                let label = if sector {
                    &mut self.sector_labels[i]
                } else {
                    &mut self.labels[i]
                };
                label.top = label.top.max(floor);
                // The person's name is fixed in the centre: a label that would cover it goes
                // below it (and so do the labels after it, in order).
                if label.bbox().intersects(&person) {
                    label.top = person.y1 + GAP;
                }
                floor = label.top + label.height() + GAP;
            }
        }
        // Sector names drawn centred (family at the top): above every other label.
        let others: Vec<Box2> = self
            .labels
            .iter()
            .chain(
                self.sector_labels
                    .iter()
                    .filter(|l| l.anchor != Anchor::Middle),
            )
            .map(Label::bbox)
            .collect();
        let top = others
            .iter()
            .map(|b| b.y0)
            .fold(CY - self.person_r, f64::min);
        for l in self
            .sector_labels
            .iter_mut()
            .filter(|l| l.anchor == Anchor::Middle)
        {
            l.top = l.top.min(top - l.height() - GAP);
        }
    }

    /// Everything drawn, with a margin: the viewBox.
    fn extent(&self) -> Box2 {
        let mut b = Box2 {
            x0: CX - self.person_r,
            y0: CY - self.person_r,
            x1: CX + self.person_r,
            y1: CY + self.person_r,
        };
        for n in &self.nodes {
            b = b.union(&Box2 {
                x0: n.x - NODE_R,
                y0: n.y - NODE_R,
                x1: n.x + NODE_R,
                y1: n.y + NODE_R,
            });
        }
        for l in self.label_boxes() {
            b = b.union(&l);
        }
        // The sector dividers reach SECTOR_LABEL_R - 10 from the centre.
        let r = SECTOR_LABEL_R - 10.0;
        b = b.union(&Box2 {
            x0: CX - r,
            y0: CY - r,
            x1: CX + r,
            y1: CY + r,
        });
        Box2 {
            x0: b.x0 - MARGIN,
            y0: b.y0 - MARGIN,
            x1: b.x1 + MARGIN,
            y1: b.y1 + MARGIN,
        }
    }

    /// The map in words: the SVG's description, read by screen readers.
    pub fn description(&self) -> String {
        if self.nodes.is_empty() {
            return format!(
                "{} is in the centre. No one has been added to their network yet.",
                self.person
            );
        }
        let mut parts = vec![format!(
            "{} is in the centre, with {} {} in their network.",
            self.person,
            self.nodes.len(),
            if self.nodes.len() == 1 {
                "person"
            } else {
                "people"
            }
        )];
        for (s, (_, label)) in SECTORS.iter().enumerate() {
            let here: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.sector == s)
                .map(|n| {
                    let came = match n.attended {
                        0 => "has not come to a meeting yet".to_string(),
                        1 => "came to 1 meeting".to_string(),
                        k => format!("came to {k} meetings"),
                    };
                    let left = if n.left { ", has left the network" } else { "" };
                    format!("{} ({}), {came}{left}", n.name, n.relationship)
                })
                .collect();
            if !here.is_empty() {
                parts.push(format!("{label}: {}.", here.join("; ")));
            }
        }
        parts.join(" ")
    }

    /// The SVG, inside a figure with a caption that explains the lines.
    pub fn svg(&self) -> String {
        let v = &self.view;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<figure class="app-ecomap"><svg class="app-ecomap__svg" viewBox="{:.1} {:.1} {:.1} {:.1}" role="img" aria-labelledby="ecomap-title ecomap-desc" focusable="false" xmlns="http://www.w3.org/2000/svg"><title id="ecomap-title">Network of {}</title><desc id="ecomap-desc">{}</desc>"#,
            v.x0,
            v.y0,
            v.x1 - v.x0,
            v.y1 - v.y0,
            esc(&self.person),
            esc(self.description())
        );
        // Sector guides and labels.
        for (i, (role, _)) in SECTORS.iter().enumerate() {
            let (x1, y1) = point(i as f64 * 72.0 - 36.0, 60.0);
            let (x2, y2) = point(i as f64 * 72.0 - 36.0, SECTOR_LABEL_R - 10.0);
            let _ = write!(
                s,
                r#"<line class="app-ecomap__divider" x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}"/>"#
            );
            s.push_str(&label_svg(
                &self.sector_labels[i],
                &format!(" app-ecomap__sector--{role}"),
            ));
        }
        // Lines first, so nodes sit on top of them.
        for n in &self.nodes {
            let (class, width) = if n.attended > 0 {
                ("attended", (2 + n.attended).min(8))
            } else {
                ("invited", 2)
            };
            let _ = write!(
                s,
                r#"<line class="app-ecomap__line app-ecomap__line--{class}" x1="{CX}" y1="{CY}" x2="{:.1}" y2="{:.1}" stroke-width="{width}"/>"#,
                n.x, n.y
            );
        }
        let _ = write!(
            s,
            r#"<circle class="app-ecomap__person" cx="{CX}" cy="{CY}" r="{:.1}"/>"#,
            self.person_r
        );
        s.push_str(&label_svg(&self.person_label, ""));
        for (n, label) in self.nodes.iter().zip(&self.labels) {
            let role = SECTORS[n.sector].0;
            let left = if n.left {
                " app-ecomap__node--left"
            } else {
                ""
            };
            let _ = write!(
                s,
                r#"<g class="app-ecomap__node app-ecomap__node--{role}{left}" data-member="{id}">"#,
                id = esc(&n.id),
            );
            // A label moved off its member's level (to make room) keeps a thin line to it.
            let b = label.bbox();
            let mid = (b.y0 + b.y1) / 2.0;
            if (mid - n.y).abs() > NODE_R {
                let edge = if label.anchor == Anchor::End {
                    n.x - NODE_R
                } else {
                    n.x + NODE_R
                };
                let _ = write!(
                    s,
                    r#"<line class="app-ecomap__leader" x1="{edge:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/>"#,
                    n.y,
                    label.x,
                    b.y0 + NAME_PX / 2.0
                );
            }
            let _ = write!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{NODE_R}"/><text class="app-ecomap__initials" x="{x:.1}" y="{iy:.1}" text-anchor="middle">{ini}</text>"#,
                x = n.x,
                y = n.y,
                iy = n.y + 6.0,
                ini = esc(initials(&n.name)),
            );
            s.push_str(&label_svg(label, ""));
            s.push_str("</g>");
        }
        s.push_str("</svg>");
        s.push_str(r#"<figcaption class="nhsuk-body-s app-ecomap__key"><span class="app-ecomap__key-attended" aria-hidden="true"></span> solid line: has come to meetings (thicker means more often) <span class="app-ecomap__key-invited" aria-hidden="true"></span> dashed line: has not come to a meeting yet</figcaption></figure>"#);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polyphony_core::model::view::EntryMeta;
    use polyphony_core::model::Stored;

    fn member(id: &str, name: &str, role: &str) -> MemberView {
        MemberView {
            meta: EntryMeta {
                id: format!("00000000-0000-4000-8000-{id:0>12}")
                    .parse()
                    .unwrap(),
                created_at: None,
                created_by: None,
                entered_in_error: None,
            },
            name: name.into(),
            relationship: "sister".into(),
            role: Stored::read(Some(role.to_string())),
            phone: None,
            email: None,
            invited_by: None,
            consent: vec![],
            consent_given: false,
            joined: None,
            left: None,
        }
    }

    fn view(members: Vec<MemberView>) -> CaseView {
        serde_json::from_value::<CaseView>(serde_json::json!({
            "case_id": "c", "team_id": "t", "created_at": null, "created_by": null,
            "person": { "name": "Alex Smith", "preferred_name": "Alex", "pronouns": null,
                "date_of_birth": null, "nhs_number": null, "phone": null, "email": null,
                "address": null, "contact_preference": null },
            "network": members, "care_team": [],
            "timeline": { "referral": null, "first_contact": null, "first_network_meeting": null, "closure": null },
            "meetings": [], "decisions": [], "conflicts": []
        }))
        .unwrap()
    }

    #[test]
    fn members_sit_in_their_role_sector_around_the_person() {
        let map = Ecomap::from_view(&view(vec![
            member("1", "Sam", "family"),
            member("2", "Jo", "professional"),
        ]));
        assert_eq!(map.person, "Alex");
        let sam = &map.nodes[0];
        assert_eq!(sam.sector, 0);
        // Family is at the top: above the centre.
        assert!(sam.y < CY);
        let jo = &map.nodes[1];
        assert_eq!(jo.sector, 2);
        // Professionals are lower right.
        assert!(jo.x > CX && jo.y > CY);
        for n in &map.nodes {
            let d = ((n.x - CX).powi(2) + (n.y - CY).powi(2)).sqrt();
            assert!((d - RING).abs() < 1.0);
        }
    }

    #[test]
    fn entries_in_error_are_left_off_and_the_svg_is_labelled() {
        let mut wrong = member("3", "Wrong <Person>", "friend");
        wrong.meta.entered_in_error = Some(polyphony_core::model::view::ErrorMark {
            kind: Stored::Known(polyphony_core::model::ErrorKind::Mistake),
            reason: "duplicate".into(),
            by: None,
            at: None,
        });
        let map = Ecomap::from_view(&view(vec![member("1", "Sam <Lee>", "family"), wrong]));
        assert_eq!(map.nodes.len(), 1);
        let svg = map.svg();
        assert!(svg.contains(r#"role="img" aria-labelledby="ecomap-title ecomap-desc""#));
        assert!(svg.contains("<title id=\"ecomap-title\">Network of Alex</title>"));
        assert!(svg.contains("Sam &lt;Lee&gt; (sister), has not come to a meeting yet"));
        assert!(!svg.contains("Wrong"));
        assert!(svg.contains("app-ecomap__line--invited"));
    }

    #[test]
    fn sector_names_stay_inside_the_picture() {
        for i in 0..SECTORS.len() {
            let (x, y) = sector_label_at(i);
            assert!((40.0..WIDTH - 40.0).contains(&x), "sector {i} at x {x}");
            assert!((15.0..HEIGHT - 5.0).contains(&y), "sector {i} at y {y}");
        }
    }

    /// Issue 15, part 8: twelve members with long names, crowded into few sectors. Every name is
    /// drawn whole (long ones on two lines), no label box meets another, and every one lies
    /// inside the drawing.
    #[test]
    fn twelve_long_names_are_whole_never_overlap_and_fit_the_drawing() {
        let names = [
            "Daniel Kowalczyk-Brzęczyszczykiewicz",
            "Aleksandra Wiśniewska-Nowakowska",
            "Maximilian Alexander Featherstonehaugh",
            "Oluwaseun Adebayo-Okonkwo",
            "Siobhán Ní Mhaolagáin-O'Sullivan",
            "Christopher Montgomery-Worthington",
            "Bartholomew Higginbottom",
            "Anastasia Konstantinopoulou",
            "Wolfeschlegelsteinhausenbergerdorff",
            "Margaretha Vandenberghe-Dubois",
            "Dr Rajeshwari Venkataraghavan",
            "Guðmundur Sigurðarson-Ólafsdóttir",
        ];
        let roles = [
            "family",
            "family",
            "family",
            "family",
            "family",
            "friend",
            "friend",
            "friend",
            "professional",
            "professional",
            "peer",
            "other",
        ];
        let members: Vec<MemberView> = names
            .iter()
            .zip(roles)
            .enumerate()
            .map(|(i, (n, r))| {
                let mut m = member(&i.to_string(), n, r);
                m.relationship = "my brother's partner's oldest friend".into();
                m
            })
            .collect();
        let mut v = view(members);
        v.person.preferred_name = Some("Maria Lindqvist-Kowalczyk".into());
        let map = Ecomap::from_view(&v);
        assert_eq!(map.labels.len(), 12);

        let boxes = map.label_boxes();
        for (i, a) in boxes.iter().enumerate() {
            assert!(
                map.view.contains(a),
                "label {i} {a:?} outside {:?}",
                map.view
            );
            for (j, b) in boxes.iter().enumerate().skip(i + 1) {
                assert!(!a.intersects(b), "labels {i} and {j} overlap: {a:?} {b:?}");
            }
        }
        let svg = map.svg();
        for (n, label) in names.iter().zip(&map.labels) {
            let drawn: Vec<&str> = label
                .lines
                .iter()
                .filter(|l| l.class == "app-ecomap__name")
                .map(|l| l.text.as_str())
                .collect();
            assert_eq!(drawn.join(" "), *n, "the name is whole");
            assert!(drawn.len() <= 2);
            for line in drawn {
                assert!(svg.contains(&format!(">{}<", esc(line))), "{line} drawn");
            }
        }
        assert!(!svg.contains('…'), "nothing is cut");
        let person: Vec<&str> = map
            .person_label
            .lines
            .iter()
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(
            person.join(" "),
            "Maria Lindqvist-Kowalczyk",
            "the person's name whole"
        );
    }

    #[test]
    fn an_empty_network_is_described() {
        let map = Ecomap::from_view(&view(vec![]));
        assert!(map.description().contains("No one has been added"));
    }
}
