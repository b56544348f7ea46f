//! The task's language: cardinal numbers 0–999,999 written in English and in German words,
//! their token units, and the split of the numbers into training, validation and test sets.
//!
//! English is tokenised into **words** (a hyphen is dropped: `twenty-one` → `twenty one`, it
//! carries no information since it always joins a ten and a unit). German is tokenised into
//! **morphemes**, because German writes every number below a million as one word:
//! `dreihunderteinundzwanzig` = `drei hundert ein und zwanzig`. Morphemes keep the target short
//! (at most 11 units instead of up to 65 characters), so the op-by-op decoder is cheap, and they
//! make the reordering explicit: `twenty one` → `ein und zwanzig`.
//!
//! The morpheme set ([`GERMAN_VOCAB`]) is chosen so that every German number word is a *unique*
//! concatenation of morphemes, and longest-match segmentation recovers it
//! ([`segment_german`]): units (`ein` before `und`/`hundert`/`tausend`, `eins` at the end),
//! `sech`/`sieb` for the clipped stems of `sechzehn`/`siebzehn`, `zehn elf zwölf`, the tens as
//! whole words (`zwanzig dreißig … neunzig`; `ß` is just a character inside a token), and `und
//! hundert tausend null`.

use unroll::tensor::Rng;

/// The largest number of the task.
pub const MAX_NUMBER: u32 = 999_999;

const EN_ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const EN_TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// English words for 1..=999, as tokens (no hyphen).
fn english_below_1000(n: u32, out: &mut Vec<&'static str>) {
    debug_assert!((1..1000).contains(&n));
    let (h, r) = (n / 100, n % 100);
    if h > 0 {
        out.push(EN_ONES[h as usize]);
        out.push("hundred");
    }
    if r >= 20 {
        out.push(EN_TENS[(r / 10) as usize]);
        if r % 10 > 0 {
            out.push(EN_ONES[(r % 10) as usize]);
        }
    } else if r > 0 {
        out.push(EN_ONES[r as usize]);
    }
}

/// The English tokens of `n`: `321` → `three hundred twenty one` (the hyphen of `twenty-one`
/// dropped).
///
/// # Panics
/// If `n > 999_999`.
pub fn english_tokens(n: u32) -> Vec<&'static str> {
    assert!(n <= MAX_NUMBER, "english_tokens: {n} is above {MAX_NUMBER}");
    let mut out = Vec::with_capacity(8);
    if n == 0 {
        out.push("zero");
        return out;
    }
    let (k, r) = (n / 1000, n % 1000);
    if k > 0 {
        english_below_1000(k, &mut out);
        out.push("thousand");
    }
    if r > 0 {
        english_below_1000(r, &mut out);
    }
    out
}

/// `n` in English words as written: `three hundred twenty-one`, `one thousand two hundred`,
/// `twelve thousand` (no "and", a hyphen between a ten and a unit).
pub fn english(n: u32) -> String {
    join_english(&english_tokens(n))
}

/// Writes English tokens as text, putting the hyphen back between a ten and a unit.
pub fn join_english(tokens: &[&str]) -> String {
    let mut s = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            let after_ten = EN_TENS.contains(&tokens[i - 1]) && !tokens[i - 1].is_empty();
            let unit = EN_ONES[1..10].contains(t);
            s.push(if after_ten && unit { '-' } else { ' ' });
        }
        s.push_str(t);
    }
    s
}

/// German unit morphemes inside a word (`ein` in `einundzwanzig`, `einhundert`, `eintausend`).
const DE_UNITS: [&str; 10] = [
    "", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun",
];
const DE_TENS: [&str; 10] = [
    "", "zehn", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig",
    "neunzig",
];

/// German morphemes for 1..=999. `final_one`: write 1 as `eins` (at the end of the whole
/// number, `einhunderteins`) rather than `ein` (before `tausend`: `einhunderteintausend`).
fn german_below_1000(n: u32, final_one: bool, out: &mut Vec<&'static str>) {
    debug_assert!((1..1000).contains(&n));
    let (h, r) = (n / 100, n % 100);
    if h > 0 {
        out.push(DE_UNITS[h as usize]);
        out.push("hundert");
    }
    let (t, u) = (r / 10, r % 10);
    match (t, u) {
        (0, 0) => {}
        (0, 1) => out.push(if final_one { "eins" } else { "ein" }),
        (0, u) => out.push(DE_UNITS[u as usize]),
        (1, 0) => out.push("zehn"),
        (1, 1) => out.push("elf"),
        (1, 2) => out.push("zwölf"),
        // sechzehn and siebzehn clip their stems; the other teens are unit + zehn.
        (1, 6) => out.extend(["sech", "zehn"]),
        (1, 7) => out.extend(["sieb", "zehn"]),
        (1, u) => out.extend([DE_UNITS[u as usize], "zehn"]),
        (t, 0) => out.push(DE_TENS[t as usize]),
        // The unit comes first: einundzwanzig = ein und zwanzig.
        (t, u) => out.extend([DE_UNITS[u as usize], "und", DE_TENS[t as usize]]),
    }
}

/// The German morphemes of `n`: `321` → `drei hundert ein und zwanzig`.
///
/// # Panics
/// If `n > 999_999`.
pub fn german_morphemes(n: u32) -> Vec<&'static str> {
    assert!(
        n <= MAX_NUMBER,
        "german_morphemes: {n} is above {MAX_NUMBER}"
    );
    let mut out = Vec::with_capacity(11);
    if n == 0 {
        out.push("null");
        return out;
    }
    let (k, r) = (n / 1000, n % 1000);
    if k > 0 {
        german_below_1000(k, false, &mut out);
        out.push("tausend");
    }
    if r > 0 {
        german_below_1000(r, true, &mut out);
    }
    out
}

/// `n` in German words: one word below a million, `dreihunderteinundzwanzig`.
pub fn german(n: u32) -> String {
    german_morphemes(n).concat()
}

/// Every German morpheme, in vocabulary order.
pub const GERMAN_VOCAB: [&str; 27] = [
    "null", "ein", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun",
    "sech", "sieb", "zehn", "elf", "zwölf", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig",
    "siebzig", "achtzig", "neunzig", "und", "hundert", "tausend",
];

/// Every English token, in vocabulary order.
pub const ENGLISH_VOCAB: [&str; 30] = english_vocab();

/// The ones (zero to nineteen), the tens (twenty to ninety), `hundred`, `thousand`.
const fn english_vocab() -> [&'static str; 30] {
    let mut vocab = [""; 30];
    let mut i = 0;
    while i < 20 {
        vocab[i] = EN_ONES[i];
        i += 1;
    }
    while i < 28 {
        vocab[i] = EN_TENS[i - 18]; // EN_TENS[2] is "twenty"
        i += 1;
    }
    vocab[28] = "hundred";
    vocab[29] = "thousand";
    vocab
}

/// Splits a German number word into morphemes by longest match, or `None` if some part of it
/// is no morpheme. For the words [`german`] writes this gives back [`german_morphemes`].
pub fn segment_german(word: &str) -> Option<Vec<&'static str>> {
    let mut rest = word;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let best = GERMAN_VOCAB
            .iter()
            .filter(|m| rest.starts_with(*m))
            .max_by_key(|m| m.len())?;
        out.push(*best);
        rest = &rest[best.len()..];
    }
    Some(out)
}

/// Number of ways `word` can be written as a concatenation of morphemes (1 for every number
/// word: the morpheme set is unambiguous).
pub fn count_segmentations(word: &str) -> usize {
    let bytes = word.len();
    let mut ways = vec![0usize; bytes + 1];
    ways[0] = 1;
    for i in 0..bytes {
        if ways[i] == 0 || !word.is_char_boundary(i) {
            continue;
        }
        for m in GERMAN_VOCAB {
            if word[i..].starts_with(m) {
                ways[i + m.len()] += ways[i];
            }
        }
    }
    ways[bytes]
}

// ------------------------------------------------------------------------------ vocabularies ---

/// Padding (both sides).
pub const PAD: usize = 0;
/// Start of the German output, the decoder's first input.
pub const BOS: usize = 1;
/// End of the German output.
pub const EOS: usize = 2;
const SPECIALS: usize = 3;

/// Size of the source vocabulary: padding + the English words.
pub const SRC_VOCAB: usize = 1 + ENGLISH_VOCAB.len();
/// Size of the target vocabulary: padding, BOS, EOS + the German morphemes.
pub const TGT_VOCAB: usize = SPECIALS + GERMAN_VOCAB.len();

/// Source token ids (1-based; 0 is padding).
pub fn encode_english(tokens: &[&str]) -> Vec<usize> {
    tokens
        .iter()
        .map(|t| {
            1 + ENGLISH_VOCAB
                .iter()
                .position(|v| v == t)
                .expect("an English number word")
        })
        .collect()
}

/// Target token ids of German morphemes (without BOS/EOS).
pub fn encode_german(morphemes: &[&str]) -> Vec<usize> {
    morphemes
        .iter()
        .map(|t| {
            SPECIALS
                + GERMAN_VOCAB
                    .iter()
                    .position(|v| v == t)
                    .expect("a German morpheme")
        })
        .collect()
}

/// The name of a source id.
pub fn src_token(id: usize) -> &'static str {
    match id {
        PAD => "<pad>",
        i => ENGLISH_VOCAB[i - 1],
    }
}

/// The name of a target id.
pub fn tgt_token(id: usize) -> &'static str {
    match id {
        PAD => "<pad>",
        BOS => "<s>",
        EOS => "</s>",
        i => GERMAN_VOCAB[i - SPECIALS],
    }
}

/// The German text of decoded target ids (morphemes concatenated, stopping at EOS).
pub fn decode_german(ids: &[usize]) -> String {
    ids.iter()
        .take_while(|&&i| i != EOS)
        .filter(|&&i| i >= SPECIALS)
        .map(|&i| tgt_token(i))
        .collect()
}

// ------------------------------------------------------------------------------------ splits ---

/// One example: the number, its English token ids and its German target ids (no BOS/EOS).
#[derive(Clone, Debug)]
pub struct Example {
    /// The number.
    pub n: u32,
    /// English token ids.
    pub src: Vec<usize>,
    /// German morpheme ids.
    pub tgt: Vec<usize>,
}

impl Example {
    /// The example of `n`.
    pub fn new(n: u32) -> Self {
        Example {
            n,
            src: encode_english(&english_tokens(n)),
            tgt: encode_german(&german_morphemes(n)),
        }
    }
}

/// Disjoint sets of numbers.
pub struct Splits {
    /// Training numbers.
    pub train: Vec<Example>,
    /// Validation numbers (for the per-epoch accuracy).
    pub val: Vec<Example>,
    /// Held-out test numbers: never seen in training.
    pub test: Vec<Example>,
}

/// The longest English input (`nine hundred ninety nine thousand nine hundred ninety nine`).
pub const MAX_SRC_LEN: usize = 9;

/// Splits 0..=999,999 by number, stratified by the English length L (1..=9 tokens), so every
/// length is tested and the few short numbers are trained on:
///
/// - test: `min(test_per_length, 25% of the numbers of length L)` per length;
/// - validation: `min(val_per_length, 10%)` per length;
/// - training: `train` numbers from the rest, shared out as evenly over the lengths as they
///   allow (water-filling), so every number of length 1 and 2 left (0–99, `five hundred`,
///   `twelve thousand`…) is in training, and the long lengths, of which there are hundreds of
///   thousands, get the remainder.
///
/// The sets are disjoint; which numbers go where depends only on `rng`.
pub fn make_splits(
    train: usize,
    val_per_length: usize,
    test_per_length: usize,
    rng: &mut Rng,
) -> Splits {
    let mut groups: Vec<Vec<u32>> = vec![Vec::new(); MAX_SRC_LEN];
    for n in 0..=MAX_NUMBER {
        groups[english_tokens(n).len() - 1].push(n);
    }
    let mut test = Vec::new();
    let mut val = Vec::new();
    let mut pools = Vec::new();
    for group in &mut groups {
        rng.shuffle(group);
        let n_test = test_per_length.min(group.len() / 4);
        let n_val = val_per_length.min(group.len() / 10);
        test.extend_from_slice(&group[..n_test]);
        val.extend_from_slice(&group[n_test..n_test + n_val]);
        pools.push(group[n_test + n_val..].to_vec());
    }
    // Water-filling: give each length an equal share, smaller pools wholly, the rest evenly.
    let mut quota = vec![0usize; MAX_SRC_LEN];
    let mut order: Vec<usize> = (0..MAX_SRC_LEN).collect();
    order.sort_by_key(|&l| pools[l].len());
    let mut left = train;
    for (i, &l) in order.iter().enumerate() {
        let share = left / (MAX_SRC_LEN - i);
        quota[l] = share.min(pools[l].len());
        left -= quota[l];
    }
    let mut train_numbers: Vec<u32> = pools
        .iter()
        .zip(&quota)
        .flat_map(|(pool, &q)| pool[..q].iter().copied())
        .collect();
    rng.shuffle(&mut train_numbers);
    let to_examples = |v: &[u32]| v.iter().map(|&n| Example::new(n)).collect::<Vec<_>>();
    Splits {
        train: to_examples(&train_numbers),
        val: to_examples(&val),
        test: to_examples(&test),
    }
}
