"""The certificate a request asks for, fixed when it is opened (CONTRACT "Certificates"): shown on
its card, signed exactly, or not at all once the policy no longer allows it. The validity is the
request's duration and the key its registered key; this holds the rest."""

from __future__ import annotations

import json
from dataclasses import dataclass

from access.policy import Target


def critical_options(target: Target) -> dict[str, str]:
    options = {}
    if target.source_address:
        options["source-address"] = target.source_address
    if target.force_command:
        options["force-command"] = target.force_command
    return options


@dataclass(frozen=True)
class Template:
    principals: tuple[str, ...]
    critical_options: tuple[tuple[str, str], ...] = ()  # (name, value), sorted by name
    extensions: tuple[str, ...] = ("permit-pty",)  # sorted

    @classmethod
    def for_target(cls, target: Target) -> Template:
        return cls(principals=target.principals,
                   critical_options=tuple(sorted(critical_options(target).items())),
                   extensions=tuple(sorted(target.extensions)))

    @property
    def options(self) -> dict[str, str]:
        return dict(self.critical_options)

    def refusal(self, target: Target) -> str | None:
        """Why `target` as the policy has it now no longer allows this template; None if it
        does. Narrower is allowed (fewer principals or extensions, an extra restriction); any
        widening, or losing a restriction the policy now imposes, is not."""
        name = target.name
        extra = [p for p in self.principals if p not in target.principals]
        if extra:
            return f"{name} no longer allows the principals {', '.join(extra)}"
        extra = [e for e in self.extensions if e not in target.extensions]
        if extra:
            return f"{name} no longer allows the extensions {', '.join(extra)}"
        for option, value in critical_options(target).items():
            if self.options.get(option) != value:
                return f"{name} now requires {option} {value}"
        return None

    def to_json(self) -> str:
        return json.dumps({"principals": list(self.principals), "critical_options": self.options,
                           "extensions": list(self.extensions)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Template:
        data = json.loads(text)
        return cls(principals=tuple(data["principals"]),
                   critical_options=tuple(sorted(data["critical_options"].items())),
                   extensions=tuple(sorted(data["extensions"])))
