//! Three-way merge of a meeting text, so two practitioners typing into the same notes at once both
//! keep their words.
//!
//! The page sends what it typed (`ours`) together with the text it started from (`base`). Meanwhile
//! the record may have moved on (`theirs`: a colleague's typing that arrived live). Saving `ours`
//! over `theirs` would delete the colleague's words, so the app merges: the edits that turn `base`
//! into `ours` are replayed onto `theirs`. The merged text is then saved with the core's
//! `edit_text`, which stores only the difference from `theirs`, that is, exactly our edits, as
//! automerge text operations.
//!
//! Where both sides changed the same stretch, both versions are kept, theirs first: a merge may
//! repeat words but never loses any, which is the right failure for clinical notes.

use similar::{capture_diff_slices, Algorithm, DiffOp};

/// One change in base coordinates: replace `base[start..end]` by `insert`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    start: usize,
    end: usize,
    insert: Vec<char>,
}

fn edits(base: &[char], new: &[char]) -> Vec<Edit> {
    let mut out: Vec<Edit> = Vec::new();
    for op in capture_diff_slices(Algorithm::Myers, base, new) {
        let (start, old_len, from, new_len) = match op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index,
                old_len,
                new_index,
            } => (old_index, old_len, new_index, 0),
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => (old_index, 0, new_index, new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (old_index, old_len, new_index, new_len),
        };
        let e = Edit {
            start,
            end: start + old_len,
            insert: new[from..from + new_len].to_vec(),
        };
        // Adjacent operations (a delete next to an insert) are one edit.
        match out.last_mut() {
            Some(last) if last.end == e.start => {
                last.end = e.end;
                last.insert.extend(e.insert);
            }
            _ => out.push(e),
        }
    }
    out
}

/// `base[start..end]` with `edits` (all inside that range, sorted) applied.
fn apply(base: &[char], start: usize, end: usize, edits: &[&Edit]) -> Vec<char> {
    let mut out = Vec::new();
    let mut pos = start;
    for e in edits {
        out.extend_from_slice(&base[pos..e.start]);
        out.extend_from_slice(&e.insert);
        pos = e.end;
    }
    out.extend_from_slice(&base[pos..end]);
    out
}

/// Replay the edits from `base` to `ours` onto `theirs`.
pub fn merge3(base: &str, ours: &str, theirs: &str) -> String {
    if ours == base {
        return theirs.to_string();
    }
    if theirs == base || theirs == ours {
        return ours.to_string();
    }
    let b: Vec<char> = base.chars().collect();
    let o: Vec<char> = ours.chars().collect();
    let t: Vec<char> = theirs.chars().collect();
    let ours_e = edits(&b, &o);
    let theirs_e = edits(&b, &t);

    let mut out: Vec<char> = Vec::with_capacity(t.len() + o.len() - b.len().min(o.len()));
    let (mut i, mut j, mut pos) = (0, 0, 0);
    loop {
        let start = match (theirs_e.get(i), ours_e.get(j)) {
            (None, None) => break,
            (Some(a), None) => a.start,
            (None, Some(c)) => c.start,
            (Some(a), Some(c)) => a.start.min(c.start),
        };
        out.extend_from_slice(&b[pos..start]);
        // Gather every edit that overlaps the stretch, growing it until nothing more overlaps.
        let mut end = start;
        let (mut ta, mut oa): (Vec<&Edit>, Vec<&Edit>) = (Vec::new(), Vec::new());
        loop {
            let mut grew = false;
            while let Some(e) = theirs_e.get(i) {
                if e.start < end || e.start == start {
                    end = end.max(e.end);
                    ta.push(e);
                    i += 1;
                    grew = true;
                } else {
                    break;
                }
            }
            while let Some(e) = ours_e.get(j) {
                if e.start < end || e.start == start {
                    end = end.max(e.end);
                    oa.push(e);
                    j += 1;
                    grew = true;
                } else {
                    break;
                }
            }
            if !grew {
                break;
            }
        }
        let theirs_part = apply(&b, start, end, &ta);
        let ours_part = apply(&b, start, end, &oa);
        match (ta.is_empty(), oa.is_empty()) {
            (false, true) => out.extend(theirs_part),
            (true, false) => out.extend(ours_part),
            _ if theirs_part == ours_part => out.extend(theirs_part),
            _ => {
                out.extend(theirs_part);
                out.extend(ours_part);
            }
        }
        pos = end;
    }
    out.extend_from_slice(&b[pos..]);
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_in_different_places_both_survive() {
        let base = "Alex spoke about sleep.\nSam spoke about work.";
        let ours = "Alex spoke about sleep and dreams.\nSam spoke about work.";
        let theirs = "Alex spoke about sleep.\nSam spoke about work and money.";
        assert_eq!(
            merge3(base, ours, theirs),
            "Alex spoke about sleep and dreams.\nSam spoke about work and money."
        );
    }

    #[test]
    fn typing_at_the_same_place_keeps_both_theirs_first() {
        assert_eq!(merge3("ab", "aXb", "aYb"), "aYXb");
        assert_eq!(merge3("", "ours", "theirs"), "theirsours");
    }

    #[test]
    fn no_change_on_one_side_takes_the_other() {
        assert_eq!(merge3("a", "a", "b"), "b");
        assert_eq!(merge3("a", "b", "a"), "b");
    }

    #[test]
    fn a_deletion_against_an_edit_keeps_the_edited_words() {
        let merged = merge3("one two three", "one TWO three", "one three");
        assert!(merged.contains("TWO"), "{merged}");
    }

    #[test]
    fn non_ascii_text_is_merged_by_character() {
        assert_eq!(merge3("café", "café ☕", "Café"), "Café ☕");
    }
}
