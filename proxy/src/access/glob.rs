//! Glob matching for key names and identity fields: `*` matches any run of
//! characters (none included), `?` exactly one character.

/// `*` matches any run of characters (none included), `?` exactly one; everything else
/// itself. Iterative with one backtrack point, so linear in practice and never
/// exponential.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Checked on every request: ASCII names (the usual case) match byte by byte with no
    // allocation; others by characters, so `?` is one character, not one byte.
    if pattern.is_ascii() && text.is_ascii() {
        return glob(pattern.as_bytes(), text.as_bytes(), b'*', b'?');
    }
    let (pattern, text): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    glob(&pattern, &text, '*', '?')
}

fn glob<T: Copy + PartialEq>(pattern: &[T], text: &[T], many: T, one: T) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(&c) if c == many => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == one || c == text[t] => {
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
    pattern[p..].iter().all(|&c| c == many)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "anything", true),
            ("pay-*", "pay-eu", true),
            ("pay-*", "pay", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*-eu-*", "x-eu-y", true),
            ("*a*b", "xaxxb", true),
            ("*a*b", "xaxxbc", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} vs {text}");
        }
    }
}
