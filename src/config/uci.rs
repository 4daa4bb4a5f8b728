//! A parser for the UCI file syntax (/etc/config/*), without libuci: `config`,
//! `option` and `list` lines, single-quoted, double-quoted (backslash escapes) or
//! bare values, `#` comments. Everything else is refused with the line number: a
//! router daemon should stop on a typo rather than guess.

/// Largest configuration file read (the shipped one is about 1 KiB).
pub const MAX_FILE: usize = 64 * 1024;
/// Most sections and most options per section: fixed bounds even for hostile input.
pub const MAX_SECTIONS: usize = 32;
pub const MAX_OPTIONS: usize = 64;

/// One `option` or `list` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opt {
    pub name: String,
    pub value: String,
    pub is_list: bool,
    pub line: usize,
}

/// One `config <type> [name]` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub kind: String,
    pub name: Option<String>,
    pub line: usize,
    pub options: Vec<Opt>,
}

/// A syntax error: the line and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub problem: String,
}

/// UCI identifiers (section types and names, option names): letters, digits, `_`.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Split one line into words; `#` at the start of a word starts a comment.
fn words(line: &str) -> Result<Vec<String>, String> {
    // Control characters (other than tabs) have no business in this file, quoted or
    // not; they would end up in log lines and nft input.
    if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(format!("control character {c:?}"));
    }
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        match chars.peek() {
            None | Some('#') => return Ok(out),
            _ => {}
        }
        // A word runs to the next unquoted blank; quoted parts join bare ones the
        // way the shell and libuci do ('a'"b"c is one word).
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            match c {
                ' ' | '\t' => break,
                '\'' => {
                    chars.next();
                    loop {
                        match chars.next() {
                            Some('\'') => break,
                            Some(c) => word.push(c),
                            None => return Err("unterminated single quote".into()),
                        }
                    }
                }
                '"' => {
                    chars.next();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(c) => word.push(c),
                                None => return Err("unterminated double quote".into()),
                            },
                            Some(c) => word.push(c),
                            None => return Err("unterminated double quote".into()),
                        }
                    }
                }
                '\\' => {
                    chars.next();
                    match chars.next() {
                        Some(c) => word.push(c),
                        None => return Err("backslash at the end of the line".into()),
                    }
                }
                c => {
                    chars.next();
                    word.push(c);
                }
            }
        }
        out.push(word);
    }
}

/// Parse a whole file into sections.
pub fn parse(text: &str) -> Result<Vec<Section>, SyntaxError> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |problem: String| SyntaxError { line, problem };
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let w = words(raw).map_err(err)?;
        let Some(keyword) = w.first() else {
            continue;
        };
        match keyword.as_str() {
            "config" => {
                if !(2..=3).contains(&w.len()) {
                    return Err(err("expected: config <type> ['<name>']".into()));
                }
                if !is_identifier(&w[1]) {
                    return Err(err(format!("invalid section type {:?}", w[1])));
                }
                if let Some(name) = w.get(2)
                    && !is_identifier(name)
                {
                    return Err(err(format!(
                        "invalid section name {name:?} (letters, digits and _ only)"
                    )));
                }
                if sections.len() >= MAX_SECTIONS {
                    return Err(err(format!("more than {MAX_SECTIONS} sections")));
                }
                sections.push(Section {
                    kind: w[1].clone(),
                    name: w.get(2).cloned(),
                    line,
                    options: Vec::new(),
                });
            }
            "option" | "list" => {
                let is_list = keyword == "list";
                if w.len() != 3 {
                    return Err(err(format!("expected: {keyword} <name> '<value>'")));
                }
                if !is_identifier(&w[1]) {
                    return Err(err(format!("invalid option name {:?}", w[1])));
                }
                let Some(section) = sections.last_mut() else {
                    return Err(err(format!("{keyword} outside of a config section")));
                };
                if section.options.len() >= MAX_OPTIONS {
                    return Err(err(format!("more than {MAX_OPTIONS} options in a section")));
                }
                section.options.push(Opt {
                    name: w[1].clone(),
                    value: w[2].clone(),
                    is_list,
                    line,
                });
            }
            other => {
                return Err(err(format!(
                    "unknown keyword {other:?} (expected config, option or list)"
                )));
            }
        }
    }
    Ok(sections)
}

/// Quote a value for output so that `parse` reads it back unchanged.
pub fn quote(value: &str) -> String {
    if !value.contains('\'') {
        return format!("'{value}'");
    }
    let mut s = String::from("\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Section {
        let mut s = parse(text).unwrap();
        assert_eq!(s.len(), 1);
        s.remove(0)
    }

    #[test]
    fn quoting_styles_and_comments() {
        let s = one(concat!(
            "# leading comment\n",
            "\n",
            "config helper 'ftp'\t# trailing comment\n",
            "\toption a 'single # not a comment'\n",
            "  option b \"dq \\\"esc\\\" \\\\ x\"\n",
            "option c bare\n",
            "option d 'it'\"'\"'s'\n",
            "option e ''\n",
            "\tlist port '21'   # twenty-one\n",
            "\tlist port 2121\n",
            "option f x#y\n",
        ));
        assert_eq!(
            (s.kind.as_str(), s.name.as_deref(), s.line),
            ("helper", Some("ftp"), 3)
        );
        let got: Vec<_> = s
            .options
            .iter()
            .map(|o| (o.name.as_str(), o.value.as_str(), o.is_list, o.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "single # not a comment", false, 4),
                ("b", "dq \"esc\" \\ x", false, 5),
                ("c", "bare", false, 6),
                ("d", "it's", false, 7),
                ("e", "", false, 8),
                ("port", "21", true, 9),
                ("port", "2121", true, 10),
                ("f", "x#y", false, 11),
            ]
        );
    }

    #[test]
    fn anonymous_sections_and_crlf() {
        let s = parse("config globals\r\n\toption enabled 1\r\nconfig helper\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, None);
        assert_eq!(s[0].options[0].value, "1");
        assert_eq!(s[1].line, 3);
    }

    #[test]
    fn errors_carry_the_line_number() {
        let cases: &[(&str, usize, &str)] = &[
            ("option x 1\n", 1, "outside"),
            ("config a\n\noption x 'y\n", 3, "unterminated single"),
            ("config a\noption x \"y\n", 2, "unterminated double"),
            ("config a\nopton x y\n", 2, "unknown keyword"),
            ("config a\noption x y z\n", 2, "expected: option"),
            ("config a\noption x\n", 2, "expected: option"),
            ("config\n", 1, "expected: config"),
            ("config a b c\n", 1, "expected: config"),
            ("config a 'b-c'\n", 1, "invalid section name"),
            ("config a\noption 'x.y' 1\n", 2, "invalid option name"),
            ("package cthelperd\n", 1, "unknown keyword"),
            ("config a\noption x y\\\n", 2, "backslash"),
            ("config a\noption x 'a\u{1}b'\n", 2, "control"),
        ];
        for (text, line, what) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, *line, "{text:?}: {e:?}");
            assert!(e.problem.contains(what), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn bounded_sections() {
        let text = "config a\n".repeat(MAX_SECTIONS + 1);
        assert!(parse(&text).unwrap_err().problem.contains("sections"));
    }

    #[test]
    fn quote_round_trips() {
        for v in ["", "a b", "it's", "x\"y\\z", "# no comment"] {
            let text = format!("config a\noption v {}\n", quote(v));
            assert_eq!(one(&text).options[0].value, v);
        }
    }
}
