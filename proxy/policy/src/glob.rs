//! Shell-style globs for rule matchers: `*` any run of characters, `?` one
//! character, everything else literal. Callers lowercase both sides, so
//! matching is case-insensitive: a rule about `payments` also covers a table
//! a client spells `"Payments"` — stricter, never looser.

/// Whether `text` matches `pattern` as a whole.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Classic wildcard matching with one backtrack point: linear for patterns
    // with a single `*`, at worst pattern × text otherwise.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some('?') => {
                p += 1;
                t += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        let cases = [
            ("public.pay*", "public.payments", true),
            ("public.pay*", "public.pay", true),
            ("public.pay*", "other.payments", false),
            ("dblink*", "dblink_connect", true),
            ("pg_ls_*dir", "pg_ls_waldir", true),
            ("pg_ls_*dir", "pg_ls_dir", true),
            ("pg_ls_*dir", "pg_ls_dirs", false),
            ("hoop.*", "hoop.session", true),
            ("hoop.*", "hoopla", false),
            ("r?le", "role", true),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} ~ {text}");
        }
    }
}
