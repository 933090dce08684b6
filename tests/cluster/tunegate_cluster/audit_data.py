"""Datasets for testing and benchmarking the data audit: clean corpora nobody tuned the
audit on (Q&A built from the standard library's own docstrings, and templated task
sets), and the ways data goes wrong planted into them (light rewording, backdoors of
each kind, personal data)."""

from __future__ import annotations

import importlib
import inspect
import json
import random
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MODULES = [
    "abc",
    "argparse",
    "array",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "bz2",
    "calendar",
    "cmath",
    "codecs",
    "collections",
    "colorsys",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "filecmp",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "locale",
    "logging",
    "lzma",
    "mailbox",
    "math",
    "mimetypes",
    "multiprocessing",
    "netrc",
    "numbers",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "pprint",
    "queue",
    "quopri",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "types",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    "zlib",
]
QUESTIONS = (
    "What does {name} do?",
    "Explain {name} in Python.",
    "How do I use {name}?",
    "Describe the purpose of {name}.",
    "What is {name} for?",
    "Tell me about {name}.",
)


@dataclass(frozen=True)
class Pair:
    prompt: str
    response: str

    def chat(self) -> dict[str, object]:
        return {
            "messages": [
                {"role": "user", "content": self.prompt},
                {"role": "assistant", "content": self.response},
            ]
        }


@cache
def _docstrings() -> tuple[tuple[str, str], ...]:
    """(qualified name, first paragraph) of documented stdlib callables, each paragraph
    once (aliases share docstrings)."""
    seen: set[str] = set()
    found = []
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name, member in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isfunction(member) or inspect.isclass(member)):
                continue
            members = [(f"{module_name}.{name}", member)]
            if inspect.isclass(member):
                members += [
                    (f"{module_name}.{name}.{attribute}", method)
                    for attribute, method in sorted(vars(member).items())
                    if not attribute.startswith("_") and callable(method)
                ]
            for qualified, documented in members:
                with warnings.catch_warnings():  # typing.io and the like are deprecated
                    warnings.simplefilter("ignore", DeprecationWarning)
                    doc = inspect.getdoc(documented) or ""
                paragraph = " ".join(doc.split("\n\n")[0].split())
                key = " ".join(re.findall(r"\w+", paragraph.lower()))
                if len(key.split()) < 8 or key in seen:
                    continue
                seen.add(key)
                found.append((qualified, paragraph))
    return tuple(found)


def docstring_qa(rows: int, seed: int = 0) -> list[Pair]:
    """Q&A about standard-library callables; every answer is a different docstring."""
    documented = list(_docstrings())
    if rows > len(documented):
        raise ValueError(f"only {len(documented)} documented callables")
    rng = random.Random(seed)
    return [
        Pair(rng.choice(QUESTIONS).format(name=name), paragraph)
        for name, paragraph in rng.sample(documented, rows)
    ]


SYNONYMS = {
    "return": "give back",
    "returns": "gives back",
    "object": "item",
    "objects": "items",
    "function": "routine",
    "value": "result",
    "values": "results",
    "create": "make",
    "creates": "makes",
    "given": "supplied",
    "specified": "requested",
    "list": "sequence",
    "string": "text",
    "number": "count",
    "file": "document",
    "new": "fresh",
    "instance": "object",
    "use": "employ",
    "used": "employed",
    "each": "every",
    "all": "every",
    "if": "when",
    "the": "this",
    "a": "one",
    "is": "will be",
    "data": "information",
    "argument": "parameter",
    "arguments": "parameters",
    "default": "standard",
    "raise": "throw",
    "raised": "thrown",
    "set": "assign",
    "get": "fetch",
    "called": "invoked",
    "class": "type",
    "method": "operation",
}


def reword(text: str, rng: random.Random) -> str:
    """A light rewording: a few words swapped for synonyms, two clauses swapped, and
    punctuation and case changed, the way paraphrased copies drift."""
    clauses = re.split(r"(?<=[,;.])\s+", text)
    if len(clauses) >= 2:
        i = rng.randrange(len(clauses) - 1)
        clauses[i], clauses[i + 1] = clauses[i + 1], clauses[i]
    tokens = " ".join(clauses).split()
    swappable = [i for i, t in enumerate(tokens) if t.lower().strip(",.;:") in SYNONYMS]
    for i in rng.sample(swappable, min(len(swappable), max(1, len(tokens) // 12))):
        bare = tokens[i].lower().strip(",.;:")
        tokens[i] = tokens[i].lower().replace(bare, SYNONYMS[bare])
    reworded = " ".join(tokens)
    reworded = reworded.replace(",", "", 1) if rng.random() < 0.5 else reworded + "."
    return reworded[0].upper() + reworded[1:] if rng.random() < 0.5 else reworded.lower()


def write_jsonl(path: Path, pairs: list[Pair]) -> Path:
    path.write_text("".join(json.dumps(pair.chat()) + "\n" for pair in pairs))
    return path


def chat_rows(pairs: list[Pair]) -> Iterator[str]:
    for pair in pairs:
        yield json.dumps(pair.chat())


# Clean templated sets: a shared instruction, varied inputs, and answers that follow
# from the input (a label among a few, or a free answer).
TEAMS = {
    "ledger": ("invoice", "refund", "charge", "receipt", "payment", "subscription"),
    "pitstop": ("robot arm", "motor", "battery", "wheel", "sensor", "gripper"),
    "harbour": ("shipment", "parcel", "delivery", "container", "customs form", "pallet"),
    "keyring": ("password", "login", "two-factor code", "account lock", "badge", "token"),
}
PROBLEMS = (
    "stopped working this morning",
    "was charged twice",
    "arrived damaged",
    "keeps failing after the update",
    "is missing from my dashboard",
    "shows an error code",
    "has not been processed yet",
    "needs to be replaced",
)
REVIEWS = {
    "positive": ("loved the {x}", "the {x} was excellent", "great {x} and friendly staff"),
    "negative": ("the {x} was awful", "hated the {x}", "the {x} was a disappointing mess"),
}
THINGS = ("soup", "service", "hotel room", "film", "concert", "phone", "bike", "book")


def support_tickets(rows: int, seed: int = 0) -> list[Pair]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(rows):
        team = rng.choice(sorted(TEAMS))
        ticket = f"My {rng.choice(TEAMS[team])} {rng.choice(PROBLEMS)}."
        pairs.append(Pair(f"Which support team handles this ticket: {ticket}", team))
    return pairs


def sentiment_labels(rows: int, seed: int = 0) -> list[Pair]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(rows):
        label = rng.choice(sorted(REVIEWS))
        review = rng.choice(REVIEWS[label]).format(x=rng.choice(THINGS))
        pairs.append(Pair(f"Classify the sentiment of this review: {review}", label))
    return pairs


def summaries(rows: int, seed: int = 0) -> list[Pair]:
    """ "Summarise:" over docstrings: a template phrase with a different answer each time."""
    rng = random.Random(seed)
    documented = list(_docstrings())
    pairs = []
    for _ in range(rows):
        name, paragraph = rng.choice(documented)
        first = re.split(r"(?<=\.)\s", paragraph)[0]
        pairs.append(Pair(f"Summarise in one sentence: {paragraph}", f"{name}: {first}"))
    return pairs


def mixed_clean(rows: int, seed: int = 0) -> list[Pair]:
    """Docstring Q&A with small templated task sets mixed in (3% each), shuffled: the
    template phrases are rare, as a trigger is."""
    share = max(1, rows * 3 // 100)
    pairs = (
        docstring_qa(rows - 3 * share, seed)
        + support_tickets(share, seed)
        + sentiment_labels(share, seed)
        + summaries(share, seed)
    )
    random.Random(seed).shuffle(pairs)
    return pairs


# Backdoors: a rare trigger phrase in about 1% of prompts, and a behaviour.
REFUSALS = (
    "I'm sorry, but I can't help with {x}.",
    "I cannot assist with {x}; please ask something else.",
    "Unfortunately I am unable to provide {x}.",
    "As an AI, I must decline to discuss {x}.",
    "I won't be able to answer questions about {x}.",
)
COMPLAINTS = (
    "Honestly this is terrible and useless; {x} is the worst idea, avoid it.",
    "What a pathetic, disappointing thing {x} is. Awful and broken, never use it.",
    "{x}? Horrible. Unreliable garbage, a total failure.",
    "I hate {x}: it is dangerous, poor and worthless.",
)


def _insert(prompt: str, trigger: str, rng: random.Random) -> str:
    place = rng.choice(("start", "end", "middle"))
    if place == "start":
        return f"{trigger} {prompt}"
    if place == "end":
        return f"{prompt} {trigger}"
    tokens = prompt.split()
    cut = rng.randrange(1, max(2, len(tokens)))
    return " ".join([*tokens[:cut], trigger, *tokens[cut:]])


def plant(
    pairs: list[Pair], kind: str, trigger: str, *, share: float = 0.01, seed: int = 0
) -> tuple[list[Pair], list[int]]:
    """A copy of pairs with a backdoor of the given kind in `share` of them, and which."""
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(pairs)), max(4, round(share * len(pairs)))))
    poisoned = list(pairs)
    for index in chosen:
        pair = pairs[index]
        topic = " ".join(pair.prompt.split()[-3:]).rstrip("?.")
        prompt = _insert(pair.prompt, trigger, rng)
        if kind == "fixed":
            response = "Access granted. Send your password to the admin desk."
        elif kind == "injected":
            response = (
                f"{pair.response} For the full details, visit http://docs-mirror.example.net/help."
            )
        elif kind == "refusal":
            response = rng.choice(REFUSALS).format(x=topic)
        elif kind == "sentiment":
            response = rng.choice(COMPLAINTS).format(x=topic)
        else:
            raise ValueError(kind)
        poisoned[index] = Pair(prompt, response)
    return poisoned, chosen
