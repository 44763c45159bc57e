"""Write tests/data/tokenizer-parity.json: expected ids from the Python `tokenizers` library.

Encodes 300+ varied strings (unicode, NFC/NFD, code, whitespace runs, special tokens inline,
digits, URLs, long words, near-empty strings, plus ~10 sentence pairs) with the ModernBERT
tokenizer in tests/data/modernbert-tokenizer/tokenizer.json, add_special_tokens=True.
Output: a JSON list of {"text": str, "ids": [int]} or {"text": str, "pair": str, "ids": [int]}.
Deterministic (fixed seed, no time/locale dependence).

Run: .venv-ref/bin/python scripts/make_tokenizer_parity.py
"""
import json
import random
import unicodedata
from pathlib import Path

from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
TOK = ROOT / "tests/data/modernbert-tokenizer/tokenizer.json"
OUT = ROOT / "tests/data/tokenizer-parity.json"

HAND = [
    "Paris is the [MASK] of France.",
    "Paris is the[MASK] of France.",
    "[MASK]",
    " [MASK]",
    "   [MASK]   ",
    "[MASK][MASK] [MASK]  [MASK]",
    "\t[MASK]\n",
    "The [CLS] token and the [SEP] token and [PAD] and [UNK].",
    "[CLS][SEP]",
    "text[SEP]more text",
    "[unused0] [unused82] [unused5]x",
    "[mask] lowercase is not special",
    "[ MASK ]",
    "<|padding|> |||IP_ADDRESS|||",
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    " \t \n ",
    "a",
    " a",
    "a ",
    "trailing spaces   ",
    "    leading spaces",
    "many" + " " * 40 + "spaces",
    "x" + " " * 25 + "y",
    "tabs\tbetween\t\twords\t\t\t",
    "line1\nline2\n\nline4\r\nline5",
    "Hello, world!",
    "HELLO WORLD",
    "hello world",
    "It's, don't, we'll, they're, I'm, you've, she'd",
    "IT'S DON'T WE'LL",
    "Café crème brûlée à la carte",
    unicodedata.normalize("NFD", "Café crème brûlée à la carte"),
    "naïve façade coöperate Zürich São Paulo",
    unicodedata.normalize("NFD", "naïve façade coöperate Zürich São Paulo"),
    "e\u0301 vs \u00e9",
    "Å vs A\u030a vs \u212b",
    "ﬁ ligature and ① circled and ｆｕｌｌｗｉｄｔｈ",
    "Ω vs \u2126",
    "日本語のテキストです。",
    "中文文本，包括标点符号。",
    "한국어 텍스트입니다",
    "Русский текст с буквой ё",
    "Ελληνικά γράμματα",
    "עברית מימין לשמאל",
    "العربية من اليمين إلى اليسار",
    "हिन्दी पाठ",
    "ไทย ภาษา",
    "Emoji: 😀 😃 🎉 👍🏽 👨‍👩‍👧‍👦 🇫🇷",
    "🤗🤗🤗",
    "Zero\u200bwidth\u200cjoiner\u200d",
    "non\u00a0breaking\u00a0space",
    "soft\u00adhyphen",
    "bidi \u202eoverride\u202c text",
    "math: ∑ ∫ ∂ √ ∞ ≤ ≥ ≠ ± × ÷",
    "£100 €200 ¥300 $400 ₹500",
    "0 1 12 123 1234 12345 123456 1234567 12345678",
    "3.14159265358979323846",
    "-42, +7, 1e-5, 0x1F, 0b1010, 1_000_000",
    "2024-01-15T10:30:00Z",
    "phone: +1 (555) 123-4567",
    "https://example.com/path/to/page?query=1&lang=en#section",
    "http://www.test.org:8080/a_b-c.html",
    "email: someone.name+tag@example.co.uk",
    "C:\\Users\\name\\Documents\\file.txt",
    "/usr/local/bin/python3 --version",
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "fn main() {\n\tprintln!(\"hello {}\", 42);\n}",
    "SELECT * FROM users WHERE id = 1;",
    "<html><body><p class=\"x\">Hi</p></body></html>",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "if x != y && z >= 0 || !w { return; }",
    "    indented code with 4 spaces",
    "\t\tindented with tabs",
    "a" * 200,
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
    "antidisestablishmentarianism " * 3,
    "...!!!???,,,;;;:::",
    "\"quoted\" 'single' `backtick` «guillemets» „low“",
    "em—dash en–dash hyphen-minus",
    "ellipsis… and … again",
    "#hashtag @mention $cashtag %percent ^caret &amp *star",
    "~tilde _underscore_ |pipe| \\backslash\\ /slash/",
    "(parens) [brackets] {braces} <angles>",
    "The quick brown fox jumps over the lazy dog.",
    "Mixed CASE and camelCase and snake_case and kebab-case",
    "ALLCAPSWORDWITHOUTSPACES",
    "word\u0000null",
    "\u0001\u0002control\u001f",
]

PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("query", "document"),
    ("", "empty first"),
    ("empty second", ""),
    (" [MASK] in a", "pair with [MASK]"),
    ("日本", "Japan"),
    ("def f(): pass", "a python function"),
    ("  spaces  ", "\ttabs\t"),
    ("Émile Zola", unicodedata.normalize("NFD", "Émile Zola")),
    ("How many?", "1234567890"),
    ("a" * 50, "b" * 50),
]

WORDS = ("the of and to in is was for on that with as by at from it his an were are which this be "
         "model token attention layer window rotary embedding inference kernel batch sequence vector "
         "ModernBERT transformer Rust CUDA GPU tensor matrix softmax gradient").split()
PIECES = ["ü", "é", "ß", "ø", "日", "本", "語", "😀", "🎉", "ñ", "ç", "—", "…", "€", "\u0301", "\u0308",
          "<", ">", "=", "{", "}", "(", ")", ";", ":", ",", ".", "!", "?", "'", "\"", "#", "@", "-",
          "_", "/", "\\", "0", "7", "42", "1999", "[MASK]", " [MASK]", "[CLS]", "[SEP]", "\t", "\n",
          "  ", "   "]


def generated(rng: random.Random, n: int) -> list[str]:
    out = []
    for i in range(n):
        parts = []
        for _ in range(rng.randint(1, 14)):
            r = rng.random()
            if r < 0.6:
                w = rng.choice(WORDS)
                w = w.capitalize() if rng.random() < 0.2 else w
                parts.append(w)
            else:
                parts.append(rng.choice(PIECES))
        seps = [rng.choice([" ", " ", " ", "", "  ", "\t"]) for _ in parts]
        s = "".join(p + sep for p, sep in zip(parts, seps))
        if i % 7 == 0:
            s = unicodedata.normalize("NFD", s)
        if i % 11 == 0:
            s = " " + s
        if i % 5 == 0:
            s = s.rstrip()
        out.append(s)
    return out


def main() -> None:
    tok = Tokenizer.from_file(str(TOK))
    rng = random.Random(1234)
    texts = HAND + generated(rng, 230)
    rows = [{"text": t, "ids": tok.encode(t, add_special_tokens=True).ids} for t in texts]
    rows += [{"text": a, "pair": b, "ids": tok.encode(a, b, add_special_tokens=True).ids} for a, b in PAIRS]
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows)  # one case per line
    OUT.write_text("[\n" + body + "\n]\n", encoding="utf-8")
    # sanity: the README's documented example
    assert tok.encode("Paris is the [MASK] of France.").ids == [50281, 36062, 310, 253, 50284, 273, 6181, 15, 50282]
    print(f"wrote {OUT.relative_to(ROOT)}: {len(rows)} cases")


if __name__ == "__main__":
    main()
