"""Tier 2 fast signals and sensitive-data detection: regular expressions and
counts over the request, well under a millisecond, no model calls."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from autoroute.types import Request

_FLAGS = re.IGNORECASE
CODE_FENCE = re.compile(r"```|~~~")
FILE_EXT = re.compile(
    r"\b[\w./-]+\.(?:py|ipynb|js|jsx|ts|tsx|go|rs|java|kt|kts|swift|rb|php|c|h|cc|cpp|hpp|cs|scala|sql|sh|bash|"
    r"yaml|yml|toml|json|html|css|scss|vue|svelte|lua|dart|r|m|pl|ex|exs|tf|dockerfile|gradle)\b", _FLAGS)
SYNTAX = re.compile(
    r"(?:^|\n)\s*(?:def |class |import |from \w+ import|#include|function |const |let |var |public |private |"
    r"fn |func |package |SELECT |INSERT |UPDATE |CREATE TABLE|return |if \(|for \(|while \(|try:|except |"
    r"async |await |@\w+)|=>|\)\s*\{|;\s*$|console\.log|System\.out|printf\(|Traceback \(most recent call last\)",
    re.MULTILINE)
INTENTS: dict[str, re.Pattern[str]] = {
    "fix": re.compile(r"\b(fix|fixing|bug|buggy|error|errors|exception|traceback|stack ?trace|crash(es|ed)?|"
                      r"broken|fail(s|ing|ed)?|doesn'?t work|not working|segfault|debug)\b", _FLAGS),
    "review": re.compile(r"\b(review|reviewing|critique|code review|look over|feedback on|audit|"
                         r"improve (this|my) code|best practices)\b", _FLAGS),
    "create": re.compile(r"\b(write|create|generate|build|implement|make|draft|compose|design)\b", _FLAGS),
    "explain": re.compile(r"\b(explain|what does|how does|why does|what is|what are|meaning of|describe)\b", _FLAGS),
    "analyze": re.compile(r"\b(analy[sz]e|analysis|analy[sz]ing|insights?|trends?|interpret|break ?down|"
                          r"evaluate|assess)\b", _FLAGS),
    "plan": re.compile(r"\b(plan|plans|planning|strategy|strategies|strategic|roadmap|milestones?|timeline|"
                       r"schedule|step[- ]by[- ]step plan)\b", _FLAGS),
    "translate": re.compile(r"\b(translate|translation|translating|into (english|french|german|spanish|italian|"
                            r"portuguese|chinese|japanese|korean|russian|arabic|hindi|dutch))\b", _FLAGS),
    "summarize": re.compile(r"\b(summari[sz]e|summary|summarise|tl;?dr|key points|recap|condense|"
                            r"in a nutshell)\b", _FLAGS),
    "math": re.compile(r"\b(solve|equation|integral|derivative|prove|theorem|probability|calculate|compute)\b|"
                       r"\d+\s*[-+*/^=]\s*\d+", _FLAGS),
    "research": re.compile(r"\b(research|compare|comparison|pros and cons|literature|state of the art|"
                           r"survey|sources|evidence)\b", _FLAGS),
    "creative": re.compile(r"\b(story|poem|poetry|lyrics|novel|fiction|screenplay|haiku|slogan|"
                           r"marketing copy|tagline|character)\b", _FLAGS),
}
# Which weak intent hints at which task, for the tiers below.
INTENT_TASK = {
    "fix": "debugging", "review": "code_review", "analyze": "analysis", "plan": "planning",
    "translate": "translation", "summarize": "summarization", "math": "math", "research": "research",
    "creative": "creative_writing", "explain": "simple_qa", "create": "coding",
}
GREETING = re.compile(
    r"^\s*(hi|hello|hey|hiya|howdy|yo|greetings|good (morning|afternoon|evening|day)|hallo|hola|bonjour|"
    r"ciao|salut|hey there|hi there|hello there|what'?s up|sup)\b[\s,!.?]*(there|all|everyone|team|friend|"
    r"buddy)?[\s,!.?:)]*(how are you( doing)?( today)?)?[\s,!.?:)]*$", _FLAGS)
FOLLOW_UP = re.compile(r"^\s*(and|also|what about|how about|but|ok(ay)?|thanks|now|then|same|again|"
                       r"can you (also|make it)|make it|shorter|longer|why)\b|\b(that|it|this|above|previous)\b",
                       _FLAGS)

# Sensitive data.
EMAIL = re.compile(r"\b[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+\b")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}(?!\w)")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
SECRET = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|sk_(?:live|test)_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{30,}|"
    r"gh[ousr]_[A-Za-z0-9]{30,}|xox[baprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|"
    r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})|-----BEGIN [A-Z ]*PRIVATE KEY-----|"
    r"\b(?:api[_-]?key|secret|password|passwd|token)\s*[:=]\s*['\"]?[^\s'\"]{8,}", _FLAGS)
NATIONAL_ID = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b|"  # US SSN
                         r"\b[A-CEGHJ-PR-TW-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]\b")  # UK NINO


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


def find_sensitive(text: str, kinds: frozenset[str] | set[str] | None = None) -> list[str]:
    """Kinds of sensitive data present in `text` (email, phone, card_number, secret, national_id)."""
    found = []
    want = kinds or {"email", "phone", "card_number", "secret", "national_id"}
    if "card_number" in want:
        for m in CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if 13 <= len(digits) <= 19 and luhn_valid(digits):
                found.append("card_number")
                break
    if "secret" in want and SECRET.search(text):
        found.append("secret")
    if "email" in want and EMAIL.search(text):
        found.append("email")
    if "national_id" in want and NATIONAL_ID.search(text):
        found.append("national_id")
    if "phone" in want and PHONE.search(text):
        found.append("phone")
    return found


@dataclass
class Signals:
    """What Tier 2 saw. `fired` holds the signal names rules refer to."""
    fired: set[str] = field(default_factory=set)
    estimated_tokens: int = 0
    turns: int = 0
    sensitive: list[str] = field(default_factory=list)
    task_hints: dict[str, float] = field(default_factory=dict)


def extract(request: Request, *, chars_per_token: float = 4.0, long_conversation_turns: int = 20,
            short_question_max_words: int = 20, sensitive_kinds: set[str] | None = None) -> Signals:
    text = request.last_user_text
    s = Signals()
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
    fired = s.fired
    head = text[:4000]  # intents and code live near the start of a long paste too
    if CODE_FENCE.search(text):
        fired.update(("code", "code_fence"))
    else:
        syntax_hits = len(SYNTAX.findall(head))
        if syntax_hits >= 2:
            fired.update(("code", "code_syntax"))
        elif FILE_EXT.search(head):
            fired.add("file_extension")
    for name, pattern in INTENTS.items():
        if pattern.search(head):
            fired.add(f"intent_{name}")
            s.task_hints[INTENT_TASK[name]] = s.task_hints.get(INTENT_TASK[name], 0.0) + 1.0
    words = len(text.split())
    if words <= 12 and GREETING.match(text):
        fired.add("greeting")
    if words <= short_question_max_words and text.rstrip().endswith("?") and "code" not in fired:
        fired.add("short_question")
    has_prior_answer = any(m.role == "assistant" for m in request.messages[:-1])
    if has_prior_answer and words <= 25 and FOLLOW_UP.search(text):
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
        s.sensitive = find_sensitive("\n".join(m.content for m in request.messages), sensitive_kinds)
        if s.sensitive:
            fired.add("sensitive_data")
    return s
