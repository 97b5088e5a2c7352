"""Tier 2 fast signals and sensitive-data detection: word sets, substring
checks and a few anchored regular expressions over the request, well under a
millisecond for a 2,000-token conversation, no model calls."""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

from autoroute.types import Request

_I = re.IGNORECASE
WORD = re.compile(r"[a-z][a-z';]*")
CODE_FENCES = ("```", "~~~")
CODE_MARKERS = ("def ", "class ", "import ", "#include", "function ", "const ", "let ", "=>", "){", ") {",
                "console.log", "System.out", "printf(", "Traceback (most recent call last)", "SELECT ",
                "return ", "};", "fn ", "func ", "public static", "elif ", "#!/", "</", "/>", "();")
FILE_EXT = re.compile(r"\.(?:py|ipynb|js|jsx|ts|tsx|go|rs|java|kt|kts|swift|rb|php|c|h|cc|cpp|hpp|cs|scala|sql|"
                      r"sh|bash|yaml|yml|toml|json|html|css|scss|vue|svelte|lua|dart|pl|ex|exs|tf|gradle)\b")

# Intent keywords: single words (matched against the message's word set) and
# phrases (substring of the lower-cased message).
INTENTS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "fix": (frozenset("fix fixing fixed bug bugs buggy error errors exception traceback crash crashes crashed "
                      "broken fail fails failing failed segfault debug stacktrace".split()),
            ("doesn't work", "doesnt work", "not working", "stack trace")),
    "review": (frozenset("review reviewing critique audit".split()),
               ("code review", "look over", "feedback on", "improve this code", "improve my code",
                "best practices")),
    "create": (frozenset("write create generate build implement make draft compose design".split()), ()),
    "explain": (frozenset("explain describe".split()),
                ("what does", "how does", "why does", "what is", "what are", "meaning of")),
    "analyze": (frozenset("analyze analyse analysis analyzing analysing insight insights trend trends interpret "
                          "evaluate assess breakdown".split()), ("break down",)),
    "plan": (frozenset("plan plans planning strategy strategies strategic roadmap milestone milestones timeline "
                       "schedule".split()), ()),
    "translate": (frozenset("translate translation translating translated".split()),
                  tuple(f"into {lang}" for lang in "english french german spanish italian portuguese chinese "
                        "japanese korean russian arabic hindi dutch".split())),
    "summarize": (frozenset("summarize summarise summary summarizing tldr tl;dr recap condense".split()),
                  ("key points", "in a nutshell")),
    "math": (frozenset("solve equation equations integral derivative prove theorem probability calculate "
                       "compute".split()), ()),
    "research": (frozenset("research compare comparison literature survey sources evidence".split()),
                 ("pros and cons", "state of the art")),
    "creative": (frozenset("story poem poetry lyrics novel fiction screenplay haiku slogan tagline "
                           "character".split()), ("marketing copy",)),
}
ARITHMETIC = re.compile(r"\d\s*[-+*/^=]\s*\d")
# Which weak intent hints at which task, and how strongly, for the tiers below.
INTENT_WEIGHT = {"create": 0.5, "explain": 0.5, "creative": 1.5, "translate": 1.5, "summarize": 1.5}
INTENT_TASK = {
    "fix": "debugging", "review": "code_review", "analyze": "analysis", "plan": "planning",
    "translate": "translation", "summarize": "summarization", "math": "math", "research": "research",
    "creative": "creative_writing", "explain": "simple_qa", "create": "coding",
}
GREETING = re.compile(
    r"^\s*(hi|hello|hey|hiya|howdy|yo|greetings|good (morning|afternoon|evening|day)|hallo|hola|bonjour|"
    r"ciao|salut|what'?s up|sup)\b[\s,!.?]*(there|all|everyone|team|friend|buddy)?[\s,!.?:)]*"
    r"(how are you( doing)?( today)?)?[\s,!.?:)]*$", _I)
FOLLOW_UP_START = ("and ", "also", "what about", "how about", "but ", "ok", "thanks", "now ", "then ", "same",
                   "again", "can you also", "make it", "shorter", "longer", "why")
FOLLOW_UP_WORDS = frozenset("that it this above previous".split())

# Sensitive data. Numeric kinds are checked only around runs of digits.
NUMERIC_RUN = re.compile(r"[0-9][0-9 ()+.-]{5,}[0-9]")
EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}(?!\w)")
SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")
NINO = re.compile(r"\b[A-CEGHJ-PR-TW-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]\b")
SECRET = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|sk_(?:live|test)_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{30,}|"
    r"gh[ousr]_[A-Za-z0-9]{30,}|xox[baprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|"
    r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})|-----BEGIN [A-Z ]*PRIVATE KEY-----|"
    r"\b(?:api[_-]?key|secret|password|passwd|token)\s*[:=]\s*['\"]?[^\s'\"]{8,}", _I)
SECRET_MARKERS = ("sk-", "sk_", "AKIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "AIza", "eyJ",
                  "PRIVATE KEY")
SECRET_WORDS = ("api_key", "api-key", "apikey", "secret", "password", "passwd", "token")
SENSITIVE_KINDS = frozenset({"email", "phone", "card_number", "secret", "national_id"})


def luhn_valid(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _has_card_number(run: str) -> bool:
    """A Luhn-valid 13-19 digit number inside a numeric run, written whole or
    in groups split by single spaces or dashes; windows align with the groups,
    so neighbouring numbers ("0 4111111111111111 0") don't hide it."""
    groups = [g for g in re.split(r"[^0-9]", run) if g]
    for i in range(len(groups)):
        digits = ""
        for g in groups[i:]:
            digits += g
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_valid(digits):
                return True
    return False


def find_sensitive(text: str, kinds: frozenset[str] | set[str] | None = None) -> list[str]:
    """Kinds of sensitive data present in `text` (email, phone, card_number, secret, national_id)."""
    want = kinds or SENSITIVE_KINDS
    found: set[str] = set()
    if "secret" in want and (any(t in text for t in SECRET_MARKERS)
                             or any(w in text.lower() for w in SECRET_WORDS)) and SECRET.search(text):
        found.add("secret")
    if "email" in want and "@" in text:
        at = text.find("@")
        while at != -1 and "email" not in found:
            if EMAIL.search(text, max(0, at - 65), at + 260):
                found.add("email")
            at = text.find("@", at + 1)
    if want & {"card_number", "phone", "national_id"}:
        for m in NUMERIC_RUN.finditer(text):
            run = m.group()
            ndigits = sum(c.isdigit() for c in run)
            if ndigits >= 13 and "card_number" in want and "card_number" not in found and _has_card_number(run):
                found.add("card_number")
            window = text[max(0, m.start() - 8):m.end() + 3]
            if "national_id" in want and "national_id" not in found and (SSN.search(window) or NINO.search(window)):
                found.add("national_id")
            if ndigits >= 7 and "phone" in want and "phone" not in found and PHONE.search(window):
                found.add("phone")
    return [k for k in ("card_number", "secret", "email", "national_id", "phone") if k in found]


class _MessageCache:
    """Sensitive kinds per message text: a conversation resends its history on
    every turn, so only the newest message is scanned."""

    def __init__(self, size: int = 8192):
        self.size, self.data = size, OrderedDict()

    def kinds(self, text: str, want: frozenset[str]) -> list[str]:
        key = (text, want)
        hit = self.data.get(key)
        if hit is not None:
            self.data.move_to_end(key)
            return hit
        hit = find_sensitive(text, want)
        self.data[key] = hit
        if len(self.data) > self.size:
            self.data.popitem(last=False)
        return hit


_CACHE = _MessageCache()


@dataclass
class Signals:
    """What Tier 2 saw. `fired` holds the signal names rules refer to."""
    fired: set[str] = field(default_factory=set)
    estimated_tokens: int = 0
    turns: int = 0
    sensitive: list[str] = field(default_factory=list)
    task_hints: dict[str, float] = field(default_factory=dict)


def _intents(lower: str) -> list[str]:
    words = set(WORD.findall(lower))
    hits = [name for name, (vocab, phrases) in INTENTS.items()
            if not words.isdisjoint(vocab) or any(p in lower for p in phrases)]
    if "math" not in hits and ARITHMETIC.search(lower):
        hits.append("math")
    return hits


def extract(request: Request, *, chars_per_token: float = 4.0, long_conversation_turns: int = 20,
            short_question_max_words: int = 20, sensitive_kinds: set[str] | None = None) -> Signals:
    text = request.last_user_text
    s = Signals()
    fired = s.fired
    total_chars = sum(len(m.content) for m in request.messages)
    attached = 0
    for a in request.attachments:
        if a.tokens is not None:
            attached += a.tokens
        elif a.text:
            attached += int(len(a.text) / chars_per_token)
        elif a.kind == "image":
            attached += 1000
    s.estimated_tokens = int(total_chars / chars_per_token) + attached + 4 * len(request.messages)
    s.turns = sum(1 for m in request.messages if m.role in ("user", "assistant"))
    head = text[:4000]  # intent and code markers live near the start of a long paste
    if any(f in text for f in CODE_FENCES):
        fired.update(("code", "code_fence"))
    elif sum(1 for mk in CODE_MARKERS if mk in head) >= 2:
        fired.update(("code", "code_syntax"))
    else:
        m = FILE_EXT.search(head)
        if m and m.start() > 0 and (head[m.start() - 1].isalnum() or head[m.start() - 1] in "_-"):
            fired.add("file_extension")
    lower = head.lower()
    for name in _intents(lower):
        fired.add(f"intent_{name}")
        task = INTENT_TASK[name]
        s.task_hints[task] = s.task_hints.get(task, 0.0) + INTENT_WEIGHT.get(name, 1.0)
    words = len(text.split()) if len(text) < 2000 else 400
    if words <= 12 and GREETING.match(text):
        fired.add("greeting")
    if words <= short_question_max_words and text.rstrip().endswith("?") and "code" not in fired:
        fired.add("short_question")
    if words <= 25 and any(m.role == "assistant" for m in request.messages[:-1]):
        stripped = lower.lstrip()
        if stripped.startswith(FOLLOW_UP_START) or not FOLLOW_UP_WORDS.isdisjoint(WORD.findall(lower)):
            fired.add("follow_up")
    if any(a.kind == "document" for a in request.attachments):
        fired.add("documents")
    if any(a.kind == "image" for a in request.attachments):
        fired.add("images")
    if s.turns >= long_conversation_turns:
        fired.add("long_conversation")
    if "code" in fired:
        s.task_hints["coding"] = s.task_hints.get("coding", 0.0) + 1.5
    if sum(1 for ch in head[:500] if ord(ch) > 0x2E7F) > 20:
        fired.add("non_latin_script")
    if request.policy is None or request.policy.sensitive_data == "detect":
        want = frozenset(sensitive_kinds) if sensitive_kinds else SENSITIVE_KINDS
        kinds: set[str] = set()
        for m in request.messages:
            kinds.update(_CACHE.kinds(m.content, want))
        for a in request.attachments:
            if a.text:
                kinds.update(_CACHE.kinds(a.text, want))
        s.sensitive = [k for k in ("card_number", "secret", "email", "national_id", "phone") if k in kinds]
        if s.sensitive:
            fired.add("sensitive_data")
    return s


def redact(text: str) -> str:
    """`text` with every sensitive span `find_sensitive` detects replaced by
    `[kind]` (what the service writes to its log, metrics and messages)."""
    found = find_sensitive(text)
    if not found:
        return text
    if "secret" in found:
        text = SECRET.sub("[secret]", text)
    if "email" in found:
        text = EMAIL.sub("[email]", text)
    if "card_number" in found:
        text = NUMERIC_RUN.sub(lambda m: "[card_number]" if _has_card_number(m.group()) else m.group(), text)
    if "national_id" in found:
        text = NINO.sub("[national_id]", SSN.sub("[national_id]", text))
    if "phone" in found:
        text = PHONE.sub("[phone]", text)
    return text
