//! GPT-2's byte-to-character alphabet: byte-level BPE vocabularies spell every byte as one
//! printable character, so that no token contains whitespace or control characters.
//!
//! Printable Latin-1 bytes (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for themselves; the other 68
//! bytes take the characters from U+0100 up, in byte order (so a space is `Ġ`, U+0120).

/// The character that spells `byte`.
pub(crate) fn byte_char(byte: u8) -> char {
    let b = u32::from(byte);
    let printable = |b: u32| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(byte);
    }
    // The n-th non-printable byte maps to U+0100 + n.
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(0x100 + n).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Whether every character of `token` is in the byte alphabet.
pub(crate) fn is_spelled(token: &str) -> bool {
    token.chars().all(|c| match u32::from(c) {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => true,
        // The 68 remapped bytes occupy U+0100..U+0143.
        0x100..=0x143 => true,
        _ => false,
    })
}

/// `text`'s UTF-8 bytes spelled in the byte alphabet.
pub(crate) fn spell(text: &str) -> String {
    text.bytes().map(byte_char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_spellings() {
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(byte_char(b'a'), 'a');
        assert_eq!(byte_char(0), '\u{100}');
        assert_eq!(byte_char(0xAD), '\u{143}');
        assert_eq!(spell("é"), "Ã©");
    }

    #[test]
    fn alphabet_is_a_bijection() {
        let mut chars: Vec<char> = (0..=255u8).map(byte_char).collect();
        assert!(chars.iter().all(|c| is_spelled(&c.to_string())));
        chars.sort_unstable();
        chars.dedup();
        assert_eq!(chars.len(), 256);
        assert!(!is_spelled(" "));
        assert!(!is_spelled("▁"));
    }
}
