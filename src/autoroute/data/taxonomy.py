"""The documented mapping from each source's own labels to the task taxonomy
(`autoroute.types.TASKS`). The data card prints these tables.

Where a source's label names the task outright (LLMRouter task names, the
arena-hard v2 subcategories, the summarization templates) the mapping is a
table. Where the label is a topic or an app (arena-hard v0.1 clusters,
self-instruct apps, Alpaca seed task names) the mapping is an ordered list of
keyword rules over the label and the instruction; the first rule that matches
decides and a row no rule matches is dropped as ``unmapped_label`` (counted
in the manifest), never guessed.
"""
from __future__ import annotations

import re

# The primary-label rule and the boundaries that cause most errors. The label is the
# kind of answer the request needs (its deliverable), never its topic.
PRIMARY_LABEL_RULES: list[tuple[str, str]] = [
    ("primary label", "Label the deliverable the answer must be, not the topic: \"write a story about a math "
     "teacher\" is creative_writing, \"plan a software project\" is planning, \"translate this code to Rust\" "
     "is coding (the output is a program). With two deliverables, the one the answer's quality depends on most; "
     "when equal, the first asked."),
    ("creative_writing vs planning vs research", "Prose to be read (essays, e-mails, letters, reviews, blog "
     "posts, scripts, speeches, stories, poems, captions) is creative_writing even when its subject is a plan "
     "or a study. A schedule, itinerary, budget, roadmap or step list to act on is planning. Finding, "
     "comparing or citing what is known (studies, sources, the state of a field, a market) is research."),
    ("math vs simple_qa", "Computing a value from quantities given in the request (prices, rates, a function at "
     "a point, a probability, a proof, a logic or counting puzzle) is math, even in one step. Recalling a "
     "fact, numeric or not (\"how tall is Everest\"), or an everyday how-to is simple_qa."),
    ("coding vs math", "A program, function, query, regex or algorithm to write (\"given an array / a string "
     "..., find ...\", LeetCode style) is coding, even when the problem is mathematical. A number to find "
     "for specific values, by reasoning, is math."),
    ("coding vs debugging vs code_review", "New code or a feature (including SWE-bench feature requests) is "
     "coding; code that fails or misbehaves and must be fixed is debugging; judging or improving working code "
     "(review, refactor, optimize) is code_review."),
    ("role-play and persona", "A request to speak or write in a character's voice (\"pretend you are ...\", "
     "\"act as ...\", \"as a tour guide, describe ...\") is creative_writing. A role that only sets the "
     "register of a factual answer (\"as a doctor, what is a normal heart rate?\") keeps the underlying task."),
    ("follow-ups", "A short follow-up turn (\"make it shorter\", \"now in TypeScript\", \"what if x = -2?\") "
     "takes the task of what it asks for: rewriting text is creative_writing, changing code is coding, "
     "translating is translation, recomputing is math, a why/what question is simple_qa."),
    ("summarization", "Condensing a text given in the request is summarization; the plot of a well-known work "
     "from memory is simple_qa."),
]

from autoroute.types import TASKS

# LLMRouter `task_name` -> task
LLMROUTER_TASKS: dict[str, str] = {
    "math": "math", "gsm8k": "math", "agentverse-mgsm": "math",
    "agentverse-logicgrid": "math",          # logic-grid puzzles: deductive reasoning, routed like math
    "mbpp": "coding", "human_eval": "coding",
    "natural_qa": "simple_qa", "trivia_qa": "simple_qa", "mmlu": "simple_qa", "commonsense_qa": "simple_qa",
    "openbook_qa": "simple_qa", "arc_challenge": "simple_qa", "gpqa": "simple_qa",
    "commongen": "creative_writing",         # write a sentence using the given concepts
}

# arena-hard v2.0 `subcategory` -> task
ARENA_HARD_V2: dict[str, str] = {"coding": "coding", "math": "math", "creative_writing": "creative_writing"}

# summarization template file stem -> task. Reverse templates ask to write the
# text from its summary (creative writing); "news_stock" asks which points the
# market would react to (analysis). One template is drawn per document.
SUMMARIZATION_TEMPLATES: dict[str, str] = {
    "cnn_dailymail_3_0_0_2_or_3_sentences": "summarization",
    "cnn_dailymail_3_0_0_generate_story": "creative_writing",
    "cnn_dailymail_3_0_0_news_card_view": "summarization",
    "cnn_dailymail_3_0_0_news_stock": "analysis",
    "cnn_dailymail_3_0_0_news_summary": "summarization",
    "cnn_dailymail_3_0_0_spice_up_story": "creative_writing",
    "cnn_dailymail_3_0_0_sum_in_brief": "summarization",
    "cnn_dailymail_3_0_0_tldr_summary": "summarization",
    "cnn_dailymail_3_0_0_write_an_outline": "summarization",
    "gigaword_TLDR": "summarization",
    "gigaword_first_sentence_title": "summarization",
    "gigaword_generate_summary_for_this": "summarization",
    "gigaword_in_a_nutshell": "summarization",
    "gigaword_make_a_title": "summarization",
    "gigaword_reverse_writing": "creative_writing",
    "gigaword_write_a_title_for_this_sentence": "summarization",
    "gigaword_write_an_article": "creative_writing",
    "gigaword_write_its_sentence": "summarization",
    "multi_news_distill": "summarization",
    "multi_news_expand_reverse_task_": "creative_writing",
    "multi_news_summarize": "summarization",
    "multi_news_summary_scenario": "summarization",
    "multi_news_synthesize": "summarization",
    "multi_news_what_are_the_key_points": "summarization",
    "samsum_Generate_a_summary_for_this_dialogue": "summarization",
    "samsum_Given_the_above_dialogue_write_a_summary": "summarization",
    "samsum_Sum_up_the_following_dialogue": "summarization",
    "samsum_Summarize_": "summarization",
    "samsum_Summarize_this_dialogue_": "summarization",
    "samsum_To_sum_up_this_dialog": "summarization",
    "samsum_Write_a_dialogue_that_match_this_summary": "creative_writing",
    "xsum_DOC_boils_down_to_simple_idea_that": "summarization",
    "xsum_DOC_given_above_write_one_sentence": "summarization",
    "xsum_DOC_how_would_you_rephrase_few_words": "summarization",
    "xsum_DOC_tldr": "summarization",
    "xsum_DOC_write_summary_of_above": "summarization",
    "xsum_article_DOC_summary": "summarization",
    "xsum_college_roommate_asked_DOC_so_I_recap": "summarization",
    "xsum_read_below_DOC_write_abstract": "summarization",
    "xsum_summarize_DOC": "summarization",
    "xsum_summarize_this_DOC_summary": "summarization",
}

# Whole-source labels. SWE-bench Verified issue texts report a bug to fix in a real
# repository (debugging); ZeroEval's CRUXEval asks for the output of a given Python
# function (reading code: coding).
FIXED: dict[str, str] = {"humaneval": "coding", "gsm8k": "math", "translation": "translation",
                         "swebench_prompts": "debugging"}
ZEROEVAL_TASKS: dict[str, str] = {"crux": "coding", "gsm": "math"}

# CodeAlpaca instructions: coding, unless the instruction asks to fix or review code.
CODEALPACA_RULES: list[tuple[str, str]] = [
    ("debugging", r"\b(debug|fix|bugs?|errors?|erroneous|exceptions?|wrong with|not working|correct the (code|following|program))\b"),
    ("code_review", r"\b(review|refactor|improve the (code|following)|suggest (an? )?improvements?|optimi[sz]e the (code|following))\b"),
]

# arena-hard v0.1 cluster names (topics) -> task, first match wins.
ARENA_HARD_V01_RULES: list[tuple[str, str]] = [
    ("translation", r"translation"),
    ("debugging", r"\b(fix|fixing|debug|errors?|issues|troubleshoot\w*)\b"),
    ("math", r"\b(math\w*|algebra|number theory|probability|statistics?|standard deviation|sample size|geometry|"
             r"triangle|calculus|real analysis|irrationality|equations?|dice|pi calculation|prime and perfect|"
             r"calculations?|revolutions|ball difference|puzzles?)\b"),
    ("coding", r"\b(python|rust|javascript|typescript|kotlin|swift|c\+\+|sql|css|html|react|django|flask|php|"
               r"laravel|symfony|node\.js|docker\w*|kubernetes|linux|bash|awk|code|coding|programming|"
               r"development|scripting|scripts?|apis?|web|cuda|jax|pytorch|tkinter|gradio|streamlit|shiny|vba|"
               r"excel|pandas|tidyverse|matplotlib|regex|algorithms?|linked list|arrays?|string|data structures|"
               r"implementation|hdl|assembly|shader|ffmpeg|nix\S*|odoo|databricks|spark|yolo|bot|roblox|wpf|"
               r"android|game development|gui|concurrency|sockets|vb6|lambda calculus|monads|chatbot|"
               r"console|looping|upscaling|scraping|autoencoder|caldav|authentication|extensions|"
               r"visualization|random number|cqrs|kernel|memory mapping|transformers|attention|"
               r"sharding|deobfuscation|reverse engineering|encryption|hashing|subnets|vlans|networking|"
               r"redis|filament|mocking|testing)\b"),
    ("planning", r"\b(plan\w*|strateg\w*|roadmap|management|training|operations optimization|"
                 r"profitability|business operations)\b"),
    ("research", r"\b(research|trends|literature|library science)\b"),
    ("analysis", r"\b(analysis|evaluations?|insights|kpis|assessment|exploration|econometrics)\b"),
    ("creative_writing", r"\b(story|stories|rpg|poem|song|melody|characters?|text-based|satire|creative|writing|"
                         r"dialog|debate|panel discussion|associations|slide creation)\b"),
    ("simple_qa", r"\b(explained|essentials|inquiry|questions|queries|tips|knowledge|specifications|"
                  r"functions|recipes|conditions|comparative|etymology)\b"),
]

# Self-instruct user-oriented instructions and Alpaca seed tasks: rules over
# "<app or task name> <instruction>", first match wins.
INSTRUCTION_RULES: list[tuple[str, str]] = [
    ("debugging", r"\b(fix (the )?bugs?|code_syntax_error|syntax error|debug)\b"),
    ("translation", r"\b(translat\w+ (it|the|this|following|into|to) (?!natural language)|english_to_\w+_translation|"
                    r"dialect_translation|second language)"),
    ("coding", r"\b(python|ruby|java|javascript|bash command|html|css|latex|regex|regular_expression|sql|markdown|"
               r"sheets formula|excel function|programming|code|htlm_task|leetcode|program_for)\b"),
    ("summarization", r"\b(summar\w+|tl;?dr|in a brief manner|brief summary|key points)\b"),
    ("math", r"\b(math\w*|equations?|prove|formula for computing|tip|sudoku|perfect_numbers|"
             r"subset_of_numbers|largest_number|algebra|measurement_conversion|temperature_conversion|"
             r"calculate|estimate the cost)\b"),
    ("research", r"\b(papers?|citation|abstract|research|entity_linking|university_ranking|reliable sources)\b"),
    ("planning", r"\b(plan\w*|itinerary|agenda|schedule|syllabus|to-do|todo|checklist|routine|training challenge|"
                 r"step-by-step|budget|grocery_list|resolutions|steps|courses that|template)\b"),
    ("analysis", r"\b(classif\w+|categori[sz]e|sentiment|offensive|spam|toxic|hate_speech|analy[sz]e|analysis|"
                 r"assess|compare|pros and cons|pros_and_cons|duplicates|evaluat\w+|judgement|identification|"
                 r"detection|verification|fact_check\w*|verify|predict|relevant|impact|satisfaction|syllogism|"
                 r"bias|intent|suitableness|ethical|dilemma|stereotype|whether|what is good and what is bad)\b"),
    ("creative_writing", r"\b(write|rewrite|compose|create|paraphrase|caption|tweet|email|story|poem|haiku|joke|"
                         r"jokes|lyrics|slogan|motto|bio|post|review|letter|description|describe|invent|rhyme|"
                         r"alliterations|names?|title|hook|ad|ideas|opening|ending|metaphor|brainstorm\w*|"
                         r"conversation|professional|expand|tone|funny|compliment|quote)\b"),
    ("simple_qa", r"\b(answer|question\w*|what|which|define|definition|meaning|explain|list|suggest\w*|recommend\w*|"
                  r"find|give|provide|synonyms?|antonyms?|idiom|proverbs|fill|oldest|rank|national_dishes|"
                  r"cocktails|recipe|examples?|tips)\b"),
]


# AlpacaEval instructions (helpful_base, koala, oasst, selfinstruct): the same rules as
# self-instruct over the instruction, then the open questions these chat sets are made of
# ("How do I ...?", "Why ...?") are simple_qa.
ALPACA_EVAL_RULES: list[tuple[str, str]] = INSTRUCTION_RULES + [
    ("simple_qa", r"(^\s*(how|why|who|when|where|is|are|can|could|do|does|did|should|would|will)\b|\?\s*$)"),
]


def _first(rules: list[tuple[str, str]], text: str) -> str | None:
    for task, pattern in rules:
        if re.search(pattern, text, flags=re.IGNORECASE):
            return task
    return None


def map_label(source: str, label: str, prompt: str = "") -> str | None:
    """Task for a row of `source` with the source's own `label`; None = unmapped."""
    if source in FIXED:
        return FIXED[source]
    if source == "llmrouter_query":
        return LLMROUTER_TASKS.get(label)
    if source == "arena_hard_v2":
        return ARENA_HARD_V2.get(label)
    if source == "summarization":
        return SUMMARIZATION_TEMPLATES.get(label)
    if source == "codealpaca":
        return _first(CODEALPACA_RULES, prompt.split("\n\n")[0]) or "coding"
    if source == "arena_hard_v01":
        return _first(ARENA_HARD_V01_RULES, label)
    if source in ("self_instruct", "alpaca_seed"):
        instruction = prompt.split("\n\n")[0]
        return _first(INSTRUCTION_RULES, f"{label.replace('_', ' ')} {label} {instruction}")
    if source == "zeroeval_prompts":
        return ZEROEVAL_TASKS.get(label)
    if source == "alpaca_eval_instructions":
        return _first(ALPACA_EVAL_RULES, prompt.split("\n\n")[0])
    if source == "authored":
        return label if label in TASKS else None
    raise KeyError(f"no label mapping for source {source!r}")


def mapping_tables() -> dict[str, object]:
    """The mapping as data, for the data card and the manifest."""
    return {
        "llmrouter_query (task_name)": LLMROUTER_TASKS,
        "arena_hard_v2 (subcategory)": ARENA_HARD_V2,
        "summarization (template)": SUMMARIZATION_TEMPLATES,
        "whole sources": FIXED,
        "codealpaca (instruction rules, else coding)": CODEALPACA_RULES,
        "arena_hard_v01 (cluster-name rules)": ARENA_HARD_V01_RULES,
        "self_instruct / alpaca_seed (app or task name + instruction rules)": INSTRUCTION_RULES,
        "zeroeval_prompts (task)": ZEROEVAL_TASKS,
        "alpaca_eval_instructions (instruction rules, then open questions)": ALPACA_EVAL_RULES,
    }


def review_agreement(reviews: list[dict], current: dict[str, str]) -> list[dict]:
    """Per source: hand-reviewed rows, how many the pipeline label agrees with, and how
    many reviewed rows no longer carry the reviewed label (the mapping changed since)."""
    by: dict[str, dict] = {}
    for r in reviews:
        row = by.setdefault(r["source"], {"source": r["source"], "reviewed": 0, "agree": 0, "stale": 0})
        row["reviewed"] += 1
        row["agree"] += int(r["task"] == r["reviewed_task"])
        row["stale"] += int(current.get(r["prompt_id"], r["task"]) != r["task"])
    return [by[s] for s in sorted(by)]
