"""Logins for the app (``python app.py --auth FILE``): a users file of ``user:password-hash[:role]`` lines.

The hash is PBKDF2-HMAC-SHA256 from the standard library, written as
``pbkdf2_sha256$ITERATIONS$SALT_HEX$HASH_HEX`` (the layout Django and passlib use for the same
algorithm, with hex instead of base64). Roles: ``annotator`` (the default) and ``organiser``,
who may fix the concept list every annotator rates and export every answer. Blank lines and
lines starting with ``#`` are ignored. Make a line with::

    python -m ard_core.auth add users.txt alice --organiser     # asks for the password twice
    echo "$PASSWORD" | python -m ard_core.auth add users.txt bob --password-stdin
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 200_000
ROLES = ("annotator", "organiser")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class AuthError(ValueError):
    """A users file or a user line that cannot be used, with the reason."""


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    if not password:
        raise AuthError("the password is empty")
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{ALGORITHM}${iterations}${salt.hex()}${digest.hex()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches ``hashed`` (constant-time comparison; False for a malformed hash)."""
    try:
        algorithm, iterations, salt, digest = hashed.split("$")
        if algorithm != ALGORITHM:
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    role: str = "annotator"

    @property
    def organiser(self) -> bool:
        return self.role == "organiser"

    def line(self) -> str:
        return f"{self.name}:{self.password_hash}" + (f":{self.role}" if self.role != "annotator" else "")


def parse_line(line: str, where: str = "line") -> User:
    parts = line.strip().split(":")
    if len(parts) not in (2, 3):
        raise AuthError(f"{where}: expected user:password-hash[:role], got {len(parts)} ':'-separated fields")
    name, hashed, role = parts[0], parts[1], parts[2] if len(parts) == 3 else "annotator"
    if not NAME.match(name):
        raise AuthError(f"{where}: user name {name!r} must be 1-64 letters, digits or . _ @ - (starting with a "
                        "letter or digit)")
    if not hashed.startswith(ALGORITHM + "$") or hashed.count("$") != 3:
        raise AuthError(f"{where}: the password of {name!r} is not a {ALGORITHM} hash; make the line with "
                        "`python -m ard_core.auth add FILE USER` (never store a plain password)")
    if role not in ROLES:
        raise AuthError(f"{where}: role {role!r} of {name!r} is not one of {', '.join(ROLES)}")
    return User(name, hashed, role)


class Users:
    """The users of one app, read from a users file."""

    def __init__(self, users: dict[str, User], path: Path | None = None) -> None:
        if not users:
            raise AuthError(f"{path or 'the users file'} lists no user")
        self.users, self.path = users, path

    @classmethod
    def load(cls, path: str | Path) -> "Users":
        path = Path(path)
        if not path.is_file():
            raise AuthError(f"users file {path} not found (make one with `python -m ard_core.auth add {path} USER`)")
        users: dict[str, User] = {}
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            u = parse_line(line, f"{path}:{i}")
            if u.name in users:
                raise AuthError(f"{path}:{i}: user {u.name!r} is listed twice")
            users[u.name] = u
        return cls(users, path)

    def check(self, username: str, password: str) -> bool:
        """Gradio's ``auth`` callable: the user exists and the password matches."""
        u = self.users.get(username)
        return u is not None and verify_password(password, u.password_hash)

    def is_organiser(self, username: str | None) -> bool:
        u = self.users.get(username or "")
        return u is not None and u.organiser


def add_user(path: str | Path, name: str, password: str, role: str = "annotator") -> User:
    """Add (or replace) ``name``'s line in the users file, creating it when missing."""
    path = Path(path)
    user = parse_line(f"{name}:{hash_password(password)}:{role}", "new user")
    lines = path.read_text().splitlines() if path.is_file() else ["# user:password-hash[:role]  (python -m ard_core.auth)"]
    lines = [line for line in lines if line.split(":")[0].strip() != name] + [user.line()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return user


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ard_core.auth", description="manage the app's users file (--auth)")
    sub = p.add_subparsers(dest="verb", required=True)
    add = sub.add_parser("add", help="add or replace a user (asks for the password)")
    add.add_argument("file")
    add.add_argument("user")
    add.add_argument("--organiser", action="store_true", help="may fix the concept list and export every answer")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    args = p.parse_args(argv)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 2
    try:
        u = add_user(args.file, args.user, password, "organiser" if args.organiser else "annotator")
    except AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: {u.name} ({u.role})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
