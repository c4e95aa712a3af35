//! Tables for people and JSON for scripts. Table cells escape control and bidi characters: a
//! device name or an audit detail can never inject a line or reorder a column.
use autoenroll_core::UnixTime;
use clap::ValueEnum;

#[derive(Clone, Copy, ValueEnum, Default)]
pub enum Output {
    #[default]
    Table,
    Json,
}

/// Prints `value` as pretty JSON.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A cell of a table: control characters, bidi overrides and other invisible formatting shown
/// as `\u{..}` escapes, so what is printed is what is stored, on one line.
pub fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        let invisible = matches!(c, '\u{200b}'..='\u{200d}' | '\u{2028}' | '\u{2029}' | '\u{feff}');
        if c.is_control() || bidi || invisible {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints a table with columns as wide as their widest cell (the last one unpadded), so long
/// device names or serials never push the rest out of line. Cells must already be `cell()`-safe.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(headers, rows));
}

fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).chain([headers[i].chars().count()]).max()
    };
    let widths: Vec<usize> = (0..headers.len()).map(|i| width(i).unwrap_or(0)).collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(widths[i].saturating_sub(c.chars().count()) + 2));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub fn time(t: UnixTime) -> String {
    t.to_string()
}

pub fn opt_time(t: Option<UnixTime>) -> String {
    t.map(time).unwrap_or_else(|| "-".into())
}

/// `365d` for whole days, seconds otherwise.
pub fn days(secs: i64) -> String {
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![
            vec!["a-very-long-device-name.example.com".to_string(), "Machine".into(), "issued".into()],
            vec!["db".to_string(), "WebServer".into(), "renewed".into()],
        ];
        let t = render_table(&["DEVICE", "TEMPLATE", "STATE"], &rows);
        let lines: Vec<&str> = t.lines().collect();
        // Every column starts at the same offset on every line.
        let col = |l: &str, word: &str| l.find(word).unwrap();
        assert_eq!(col(lines[0], "TEMPLATE"), col(lines[1], "Machine"));
        assert_eq!(col(lines[1], "Machine"), col(lines[2], "WebServer"));
        assert_eq!(col(lines[0], "STATE"), col(lines[2], "renewed"));
        assert_eq!(col(lines[1], "Machine"), "a-very-long-device-name.example.com".len() + 2);
    }

    #[test]
    fn cells_cannot_inject_lines_or_reorder_text() {
        assert_eq!(cell("web01"), "web01");
        assert_eq!(cell("a\nDEVICE evil"), "a\\u{a}DEVICE evil");
        assert_eq!(cell("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(cell("tab\there\r"), "tab\\u{9}here\\u{d}");
        assert_eq!(cell("Grüße"), "Grüße");
    }
}
