"""The jobs' ``--help`` layout (``pipelines.core.config.ConfigParser``'s formatter)."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with a bool as one line ``--x, --no-x`` and a default only where there is
    one (none for ``None``, an empty value, a plain switch or a help text that names it)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        negation = getattr(action, "negation", None)
        if negation is not None:  # a bool ("" for a ``no_x`` field: no ``--no-no-x``)
            return ", ".join([*action.option_strings, *([negation] if negation else [])])
        return super()._format_action_invocation(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        if (
            action.nargs == 0
            or action.default in (None, "", (), argparse.SUPPRESS)
            or "default" in help_
        ):
            return help_
        return super()._get_help_string(action)
