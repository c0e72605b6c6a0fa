"""``facturd operator add|remove|list``: who may sign in to the status page.

Job: read a password without it ever being an argument (a file, else a pipe, else asked
twice on the terminal), check it and the name here, and hand them to storage/operators.py.
Errors are OperatorError with the exit code; daemon/cli.py prints them as one line.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any, TextIO

from storage.operators import Operators, check_name, check_password
from storage.store import Store

EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND = 0, 2, 4


class OperatorError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def add_parsers(sub: Any) -> None:
    op = sub.add_parser("operator", help="status-page accounts").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    add = op.add_parser("add", help="create an operator or replace its password (closes its "
                                    "sessions); the password comes from --password-file, "
                                    "else stdin when piped, else is asked twice")
    add.add_argument("name")
    add.add_argument("--password-file", metavar="FILE",
                     help="read the password from the first line of FILE")
    op.add_parser("remove", help="delete an operator and its sessions").add_argument("name")
    op.add_parser("list", help="operator names, one a line")


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0].removesuffix("\r")


def read_password(password_file: str | None, stdin: TextIO | None = None) -> str:
    """The password from the file's first line, else stdin's first line when stdin is not a
    terminal, else asked twice (the two must match)."""
    if password_file is not None:
        try:
            return _first_line(Path(password_file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise OperatorError(f"--password-file: no file {password_file}",
                                EXIT_NOT_FOUND) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise OperatorError(f"--password-file: cannot read {password_file}: {exc}"
                                ) from None
    stdin = sys.stdin if stdin is None else stdin
    if stdin is not None and not stdin.isatty():
        return _first_line(stdin.readline())
    password = getpass.getpass("Password: ")
    _checked(password)  # before asking again
    if getpass.getpass("Password again: ") != password:
        raise OperatorError("the two passwords differ")
    return password


def _checked(password: str) -> str:
    try:
        return check_password(password)
    except ValueError as exc:
        raise OperatorError(str(exc)) from None


def run(args: argparse.Namespace, store: Store) -> int:
    operators = Operators(store)
    if args.action == "list":
        for name in operators.names():
            print(name)
        return EXIT_OK
    try:
        name = check_name(args.name)
    except ValueError as exc:
        raise OperatorError(str(exc)) from None
    if args.action == "remove":
        if not operators.remove(name):
            raise OperatorError(f"no operator {name} (facturd operator list shows them)",
                                EXIT_NOT_FOUND)
        print(f"operator {name} removed; its sessions are closed")
        return EXIT_OK
    password = _checked(read_password(args.password_file))
    replacing = name in operators.names()
    try:
        operators.add(name, password)
    except ValueError as exc:  # pragma: no cover (checked above)
        raise OperatorError(str(exc)) from None
    print(f"operator {name}: password replaced, sessions closed" if replacing
          else f"operator {name} added")
    return EXIT_OK
