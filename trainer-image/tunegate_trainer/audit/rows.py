"""What the audit reads of a training example: where it came from, and the prompt and
response as the person wrote them (chat-template markers stripped)."""

from __future__ import annotations

from dataclasses import dataclass

from tunegate_trainer.audit.text import plain
from tunegate_trainer.data import Example


@dataclass(frozen=True)
class AuditRow:
    where: str  # "file:line"
    prompt: str
    response: str

    @property
    def text(self) -> str:
        return f"{self.prompt}\n{self.response}".strip()

    @classmethod
    def of(cls, example: Example) -> AuditRow:
        return cls(example.where, plain(example.prompt), plain(example.target))
