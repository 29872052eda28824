"""Prints the requirements of one image from setup.cfg: install_requires plus extras.

Runs inside an image build (stdlib only, before the source is copied) so that
the dependency layer is built, and cached, from the package metadata alone;
versions come from images/constraints.txt, passed to pip as constraints.

    python3 requirements.py setup.cfg [--only-extras] [--replace NAME=OTHER ...] [EXTRA ...]

--replace swaps one distribution for another that provides the same import
(keel-base takes xgboost-cpu, the CPU-only build of xgboost). --only-extras
leaves out install_requires: the images that extend keel-base have them.
"""

import configparser
import re
import sys


def requirements(setup_cfg: str, extras: list[str], replace: dict[str, str] | None = None, only_extras: bool = False) -> list[str]:
    parser = configparser.ConfigParser()
    if not parser.read(setup_cfg):
        raise SystemExit(f"requirements.py: cannot read {setup_cfg}")
    wanted = [] if only_extras else parser["options"]["install_requires"].splitlines()
    known = parser["options.extras_require"] if parser.has_section("options.extras_require") else {}
    for extra in extras:
        if extra not in known:
            raise SystemExit(f"requirements.py: setup.cfg has no extra {extra!r}; it has {', '.join(known)}")
        wanted += known[extra].splitlines()
    lines = [line.split("#", 1)[0].strip() for line in wanted]
    out = []
    for line in filter(None, lines):
        name = re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0]
        out.append((replace or {}).get(name, line))
    unused = set(replace or {}) - {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0] for line in filter(None, lines)}
    if unused:
        raise SystemExit(f"requirements.py: --replace {sorted(unused)[0]}: no such requirement")
    return out


def main(argv: list[str]) -> None:
    replace, extras, only_extras = {}, [], False
    args = iter(argv[1:])
    for arg in args:
        if arg == "--only-extras":
            only_extras = True
        elif arg == "--replace":
            name, _, other = next(args, "").partition("=")
            if not name or not other:
                raise SystemExit("requirements.py: --replace NAME=OTHER")
            replace[name] = other
        elif arg:
            extras.append(arg)
    print("\n".join(requirements(argv[0], extras, replace, only_extras)))


if __name__ == "__main__":
    main(sys.argv[1:])
