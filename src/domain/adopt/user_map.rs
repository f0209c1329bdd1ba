//! `--user-map FILE`: which ts platform user is which mjk ledger user.

use std::collections::HashMap;

use uuid::Uuid;

/// Pairs `(ts_user_id, mjk_user_uuid)`, each side at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserMap {
    pub pairs: Vec<(i32, Uuid)>,
}

impl UserMap {
    /// Reads a CSV of `ts_user_id,mjk_user_uuid` lines. A first line that
    /// does not start with a digit is a header; blank lines and `#`
    /// comments are skipped. Every bad line is reported, by number.
    pub fn parse(text: &str) -> Result<UserMap, Vec<String>> {
        let mut errors = Vec::new();
        let mut pairs = Vec::new();
        let mut by_ts: HashMap<i32, usize> = HashMap::new();
        let mut by_uuid: HashMap<Uuid, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim().trim_start_matches('\u{feff}');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if i == 0 && !line.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != 2 {
                errors.push(format!(
                    "line {n}: expected `ts_user_id,mjk_user_uuid`, got {} field(s)",
                    fields.len()
                ));
                continue;
            }
            let ts = match fields[0].parse::<i32>() {
                Ok(v) if v > 0 => v,
                _ => {
                    errors.push(format!(
                        "line {n}: {:?} is not a ts user id (a positive integer)",
                        fields[0]
                    ));
                    continue;
                }
            };
            let uuid = match Uuid::parse_str(fields[1]) {
                Ok(u) => u,
                Err(_) => {
                    errors.push(format!("line {n}: {:?} is not a UUID", fields[1]));
                    continue;
                }
            };
            if let Some(first) = by_ts.insert(ts, n) {
                errors.push(format!(
                    "line {n}: ts user {ts} is already mapped on line {first}"
                ));
                continue;
            }
            if let Some(first) = by_uuid.insert(uuid, n) {
                errors.push(format!(
                    "line {n}: mjk user {uuid} is already mapped on line {first}"
                ));
                continue;
            }
            pairs.push((ts, uuid));
        }
        if errors.is_empty() {
            Ok(UserMap { pairs })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0b9c4a52-8f59-4c4a-9d0c-5d1c1f3e9a01";
    const B: &str = "7f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";

    #[test]
    fn a_map_with_a_header_comments_and_blank_lines_is_read() {
        let m = UserMap::parse(&format!(
            "ts_user_id,mjk_user_uuid\n\n# ops\n3,{A}\n 7 , {B} \n"
        ))
        .expect("valid map");
        assert_eq!(m.pairs.len(), 2);
        assert_eq!(m.pairs[1].0, 7);
    }

    #[test]
    fn every_bad_line_is_named() {
        let errors = UserMap::parse(&format!(
            "1,{A}\n2,{A}\n1,{B}\nx,{B}\n4\n5,not-a-uuid\n-3,{B}\n"
        ))
        .expect_err("bad map");
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors[0].starts_with("line 2:") && errors[0].contains("line 1"));
        assert!(errors[1].starts_with("line 3:"));
        assert!(errors.iter().any(|e| e.starts_with("line 5:")));
    }
}
