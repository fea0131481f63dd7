//! The ecomap: the person's network drawn as a picture, which people read faster than a list.
//!
//! The person is in the centre. Members sit around them in sectors by role (family, friends,
//! professionals, peers, others), so the shape of the network shows at a glance: a map that is
//! all professionals and no family tells its own story. A solid line joins the person to each member
//! who has come to a meeting, thicker the more often they came; a dashed line means invited but not
//! yet come. Members who left are drawn faded; entries marked entered in error are left off the map
//! (the list beside it still shows them, struck through).
//!
//! It is server-rendered SVG, so it works without JavaScript and prints. For people who cannot see
//! it, the SVG has a `<title>` and a `<desc>` that says the same in words, and the page shows the
//! same network as a table.

use std::f64::consts::PI;
use std::fmt::Write as _;

use polyphony_core::model::view::{CaseView, MemberView};

use crate::html::esc;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 560.0;
const CX: f64 = 380.0;
const CY: f64 = 288.0;
const RING: f64 = 165.0;
const NODE_R: f64 = 26.0;
/// Sector names sit outside the ring of members, clear of their labels.
const SECTOR_LABEL_R: f64 = 268.0;

/// The role sectors, clockwise from the top: `(stored role, label)`.
pub const SECTORS: [(&str, &str); 5] = [
    ("family", "Family"),
    ("friend", "Friends"),
    ("professional", "Professionals"),
    ("peer", "Peers"),
    ("other", "Others"),
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

/// The laid-out map.
#[derive(Debug, Clone, PartialEq)]
pub struct Ecomap {
    /// The person's name as they like to be called.
    pub person: String,
    /// Members on the map.
    pub nodes: Vec<Node>,
}

/// How many meetings (not in error) a participant key attended.
pub fn meetings_attended(view: &CaseView, key: &str) -> usize {
    view.meetings
        .iter()
        .filter(|m| m.meta.entered_in_error.is_none())
        .filter(|m| m.attendees.iter().any(|a| a == key))
        .count()
}

fn sector_of(m: &MemberView) -> usize {
    SECTORS
        .iter()
        .position(|(r, _)| *r == m.role)
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

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
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
                    id: m.meta.id.clone(),
                    name: m.name.clone(),
                    relationship: m.relationship.clone(),
                    sector: s,
                    x,
                    y,
                    attended: meetings_attended(view, &format!("member:{}", m.meta.id)),
                    left: m.left.is_some(),
                });
            }
        }
        Ecomap { person, nodes }
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
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<figure class="app-ecomap"><svg class="app-ecomap__svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="ecomap-title ecomap-desc" focusable="false" xmlns="http://www.w3.org/2000/svg"><title id="ecomap-title">Network of {}</title><desc id="ecomap-desc">{}</desc>"#,
            esc(&self.person),
            esc(&self.description())
        );
        // Sector guides and labels.
        for (i, (role, label)) in SECTORS.iter().enumerate() {
            let (x1, y1) = point(i as f64 * 72.0 - 36.0, 60.0);
            let (x2, y2) = point(i as f64 * 72.0 - 36.0, SECTOR_LABEL_R - 10.0);
            let _ = write!(
                s,
                r#"<line class="app-ecomap__divider" x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}"/>"#
            );
            let (lx, ly) = sector_label_at(i);
            let _ = write!(
                s,
                r#"<text class="app-ecomap__sector app-ecomap__sector--{role}" x="{lx:.1}" y="{ly:.1}" text-anchor="middle">{label}</text>"#
            );
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
            r#"<circle class="app-ecomap__person" cx="{CX}" cy="{CY}" r="46"/><text class="app-ecomap__person-name" x="{CX}" y="{:.1}" text-anchor="middle">{}</text>"#,
            CY + 6.0,
            esc(&shorten(&self.person, 14))
        );
        for n in &self.nodes {
            let role = SECTORS[n.sector].0;
            // Labels go on the side away from the person, so the line to the node never crosses
            // them: above a node in the upper half, below one in the lower half.
            let name_y = if n.y < CY - 1.0 {
                n.y - NODE_R - 24.0
            } else {
                n.y + NODE_R + 17.0
            };
            let left = if n.left {
                " app-ecomap__node--left"
            } else {
                ""
            };
            let _ = write!(
                s,
                r#"<g class="app-ecomap__node app-ecomap__node--{role}{left}" data-member="{id}"><circle cx="{x:.1}" cy="{y:.1}" r="{NODE_R}"/><text class="app-ecomap__initials" x="{x:.1}" y="{iy:.1}" text-anchor="middle">{ini}</text><text class="app-ecomap__name" x="{x:.1}" y="{ny:.1}" text-anchor="middle">{name}</text><text class="app-ecomap__relationship" x="{x:.1}" y="{ry:.1}" text-anchor="middle">{rel}</text></g>"#,
                id = esc(&n.id),
                x = n.x,
                y = n.y,
                iy = n.y + 6.0,
                ini = esc(&initials(&n.name)),
                ny = name_y,
                name = esc(&shorten(&n.name, 20)),
                ry = name_y + 16.0,
                rel = esc(&shorten(
                    &format!("{}{}", n.relationship, if n.left { " (left)" } else { "" }),
                    24
                )),
            );
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

    fn member(id: &str, name: &str, role: &str) -> MemberView {
        MemberView {
            meta: EntryMeta {
                id: id.into(),
                created_at: None,
                created_by: None,
                entered_in_error: None,
            },
            name: name.into(),
            relationship: "sister".into(),
            role: role.into(),
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

    #[test]
    fn an_empty_network_is_described() {
        let map = Ecomap::from_view(&view(vec![]));
        assert!(map.description().contains("No one has been added"));
    }
}
