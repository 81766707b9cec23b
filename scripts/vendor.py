#!/usr/bin/env python3
"""Vendor the chat UI's browser libraries into static/vendor/, from the npm registry, at pinned versions.

    scripts/vendor.py --check     verify static/vendor against static/vendor/SHA256SUMS (no network)
    scripts/vendor.py             fetch the pinned tarballs again, rebuild the files, and refuse unless
                                  they hash exactly as SHA256SUMS says; then rewrite static/vendor
    scripts/vendor.py --update    the same, but accept the new files and rewrite SHA256SUMS

Fetching needs npm (it runs `npm pack --ignore-scripts` in a temporary directory: nothing is
installed, no package script runs, nothing of npm's is left in the repository). Each tarball must
match the sha512 integrity pinned below before a file is taken from it. The files are served as
they are by whitenoise: no build step. Python standard library only.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parent.parent
VENDOR_DIR = REPO / "static" / "vendor"
SUMS_NAME = "SHA256SUMS"
# Files in static/vendor that this script does not own: written by hand, or the sums themselves.
UNMANAGED = {"README.md", SUMS_NAME}


@dataclass(frozen=True)
class Package:
    npm: str  # name on the npm registry
    version: str
    integrity: str  # the tarball's sha512, as `npm view NAME@VERSION dist.integrity` prints it
    dest: str  # folder under static/vendor/
    # path in the package -> path under dest. A `*` is allowed in the last part of a source path;
    # its destination is then a folder (ending in "/") that receives the matching files.
    files: dict[str, str]
    licences: tuple[str, ...]  # licence files, copied under the same name into dest
    transforms: dict[str, str] = field(default_factory=dict)  # path under dest -> name in TRANSFORMS


# ---------------------------------------------------------------------------------------------
# The pins. Change a version here, set its integrity (npm view NAME@VERSION dist.integrity),
# run `scripts/vendor.py --update`, look at the diff, and commit it with SHA256SUMS.
# Every browser file is a classic script that defines one global (see static/vendor/README.md).
# ---------------------------------------------------------------------------------------------
PACKAGES: tuple[Package, ...] = (
    # Markdown to HTML for the model's replies. The UMD browser build bundles its dependencies
    # (entities, linkify-it, mdurl, punycode.js, uc.micro), so it needs nothing else; global `markdownit`.
    Package(
        npm="markdown-it",
        version="15.0.3",
        integrity="sha512-+Az7Ojz3iRGu8KYMvJ6xVhvrxP3eE+vEtJX75Ow88XBpcQNV/0lGX5ZynIIBftREo4DC2jsveAMDaeltmm8QvQ==",
        dest="markdown-it",
        files={"dist/browser/markdown-it.umd.min.js": "markdown-it.umd.min.js"},
        licences=("LICENSE",),
    ),
    # The licences of the five packages bundled inside markdown-it's browser build, at the versions
    # its dependency ranges resolve to (entities is BSD-2-Clause: its notice must travel with it).
    Package(
        npm="entities",
        version="8.1.0",
        integrity="sha512-kxL7msIffSuh9aaFAMD7rxAIuTRMAHMeBtgHW2yUdWw732ZNh4MehkF2gdjvtdmikkaIP9bFDDJOPlsvm7avrA==",
        dest="markdown-it/bundled/entities",
        files={},
        licences=("LICENSE",),
    ),
    Package(
        npm="linkify-it",
        version="6.1.0",
        integrity="sha512-wJ/TwpSDTLepCrQoYWYIExIKg5Zchex2Nn5yk2mFnB+6PtdkHtyLx742md9csRjjOnGkKIS/RrbY7l8D6gT9Vw==",
        dest="markdown-it/bundled/linkify-it",
        files={},
        licences=("LICENSE",),
    ),
    Package(
        npm="mdurl",
        version="2.1.0",
        integrity="sha512-1+HBaOx0zi/dQWht8rNv9MYf9qqpqL/kxI0hXImU6Y547zM6Sni8BQibt7ifgMcYtQg41ao3Ivd6cnSM86inpg==",
        dest="markdown-it/bundled/mdurl",
        files={},
        licences=("LICENSE",),
    ),
    Package(
        npm="punycode.js",
        version="2.3.1",
        integrity="sha512-uxFIHU0YlHYhDQtV4R9J6a52SLx28BCjT+4ieh7IGbgwVJWO+km431c4yRlREUAsAmt/uMjQUyQHNEPf0M39CA==",
        dest="markdown-it/bundled/punycode.js",
        files={},
        licences=("LICENSE-MIT.txt",),
    ),
    Package(
        npm="uc.micro",
        version="3.0.0",
        integrity="sha512-U3PppEkleoTnIfi8BozMx3yju3qc/L6SwqWo2Sw+54PX+PX0q9I+r1Um5HCmqD7n9VDX5/v3vQH/AjA6deDdtw==",
        dest="markdown-it/bundled/uc.micro",
        files={},
        licences=("LICENSE.txt",),
    ),
    # Sanitizes the HTML that markdown-it and KaTeX produce before it reaches the page: model output
    # is untrusted. Global `DOMPurify`. Dual-licensed, so both licence texts come along.
    Package(
        npm="dompurify",
        version="3.4.18",
        integrity="sha512-ofe3wI/uNm68HInABYFJYqQxRw1EaKAjNdrFVKqjUY+UZurvNd2L/HuQe097s/4RivWiZyP6tT7aoT8atjfhwg==",
        dest="dompurify",
        files={"dist/purify.min.js": "purify.min.js"},
        licences=("LICENSE", "LICENSE-MPL"),
    ),
    # Syntax colours for code blocks. The `highlight.js` package ships no browser bundle; its
    # prebuilt one (the ~36 common languages) is published as @highlightjs/cdn-assets at the same
    # version. Global `hljs`. Two themes: github for light mode, github-dark for dark mode.
    Package(
        npm="@highlightjs/cdn-assets",
        version="11.12.0",
        integrity="sha512-KvOKXODaiFmId9xaq3xc5xCL66wVLUuOngDbO9B/kewbFTqdGbn2nJxNhN3H5R1cgDTVj6R8vH0zgiNDEGjpDw==",
        dest="highlight.js",
        files={
            "highlight.min.js": "highlight.min.js",
            "styles/github.min.css": "styles/github.min.css",
            "styles/github-dark.min.css": "styles/github-dark.min.css",
        },
        licences=("LICENSE",),
    ),
    # Typesets TeX math in replies. Global `katex`. Its CSS loads fonts/ relatively: the layout is
    # kept, with only the woff2 fonts (every browser that runs the chat reads woff2) and the CSS's
    # @font-face rules cut down to match, so no rule points at a file that is not here.
    Package(
        npm="katex",
        version="0.19.1",
        integrity="sha512-jG8uKntjSEcm2EpQOh0XturpPuuC9r3Sq5HLHdsFdWZT27E672SF19QEi+of0/YeOy15lDgRhKvr5614uRrEfA==",
        dest="katex",
        files={
            "dist/katex.min.js": "katex.min.js",
            "dist/katex.min.css": "katex.min.css",
            "dist/fonts/*.woff2": "fonts/",
        },
        licences=("LICENSE",),
        transforms={"katex.min.css": "woff2_only"},
    ),
    # The markdown-it plugin that finds math and hands it to KaTeX: $…$, $$…$$, \(…\) and \[…\]
    # (delimiters ["dollars", "brackets"]). A plain script defining the global `texmath`; pass
    # KaTeX in as its `engine`. Chosen over @vscode/markdown-it-katex, which is CommonJS only,
    # require()s its own katex 0.16 and knows only the dollar delimiters.
    Package(
        npm="markdown-it-texmath",
        version="1.0.0",
        integrity="sha512-4hhkiX8/gus+6e53PLCUmUrsa6ZWGgJW2XCW6O0ASvZUiezIK900ZicinTDtG3kAO2kon7oUA/ReWmpW2FByxg==",
        dest="markdown-it-texmath",
        files={"texmath.js": "texmath.js", "css/texmath.css": "texmath.css"},
        licences=("license.txt",),
    ),
    # GitHub-style "- [x] done" checkboxes in replies. Its dist/ is a browserify UMD build of the
    # same code as the package's CommonJS index.js; global `markdownitTaskLists`.
    Package(
        npm="markdown-it-task-lists",
        version="2.1.1",
        integrity="sha512-TxFAc76Jnhb2OUu+n3yz9RMu4CwGfaT788br6HhEDlvWfdeJcLUsxk1Hgw2yJio0OXsxv7pyIPmvECY7bMbluA==",
        dest="markdown-it-task-lists",
        files={"dist/markdown-it-task-lists.min.js": "markdown-it-task-lists.min.js"},
        licences=("LICENSE",),
    ),
    # Small, fast time-series charts (usage and latency graphs). Global `uPlot`.
    Package(
        npm="uplot",
        version="1.6.32",
        integrity="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
        dest="uplot",
        files={"dist/uPlot.iife.min.js": "uPlot.iife.min.js", "dist/uPlot.min.css": "uPlot.min.css"},
        licences=("LICENSE",),
    ),
)


class VendorError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Changes made to a fetched file. Each one fails loudly if upstream's file no longer has the
# shape it expects, rather than writing something half-changed.
# ---------------------------------------------------------------------------------------------
_KATEX_SRC = re.compile(
    r'src:url\((fonts/[\w-]+)\.woff2\) format\("woff2"\),'
    r'url\(\1\.woff\) format\("woff"\),'
    r'url\(\1\.ttf\) format\("truetype"\)'
)


def woff2_only(data: bytes) -> bytes:
    """Keep only the woff2 source of each KaTeX @font-face rule."""
    css = data.decode("utf-8")
    faces = css.count("@font-face")
    trimmed, n = _KATEX_SRC.subn(r'src:url(\1.woff2) format("woff2")', css)
    if faces == 0 or n != faces:
        raise VendorError(f"katex css: expected {faces} woff2/woff/ttf font sources, matched {n}")
    if re.search(r"\.(woff|ttf)\)", trimmed):
        raise VendorError("katex css: a woff or ttf url is left after trimming")
    return trimmed.encode("utf-8")


TRANSFORMS: dict[str, Callable[[bytes], bytes]] = {"woff2_only": woff2_only}


# ---------------------------------------------------------------------------------------------
# Hashes and the check.
# ---------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def managed_files(root: Path) -> dict[str, Path]:
    """Every file under root that the sums must cover, by its posix path relative to root."""
    found = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel not in UNMANAGED:
                found[rel] = path
    return found


def hash_tree(root: Path) -> dict[str, str]:
    return {rel: sha256_file(path) for rel, path in sorted(managed_files(root).items())}


def format_sums(sums: dict[str, str]) -> str:
    # The layout of sha256sum(1): `cd static/vendor && sha256sum -c SHA256SUMS` checks it too.
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(sums.items()))


def read_sums(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise VendorError(f"{path} is missing: run scripts/vendor.py --update to create it")
    sums = {}
    for lineno, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](\S.*)", line)
        if not m:
            raise VendorError(f"{path}:{lineno}: not a sha256sum line: {line!r}")
        digest, rel = m.groups()
        if rel in sums:
            raise VendorError(f"{path}:{lineno}: {rel} is listed twice")
        sums[rel] = digest
    return sums


def compare(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    problems = []
    for rel in sorted(expected.keys() | actual.keys()):
        if rel not in actual:
            problems.append(f"missing: {rel}")
        elif rel not in expected:
            problems.append(f"not in {SUMS_NAME}: {rel}")
        elif expected[rel] != actual[rel]:
            problems.append(f"changed: {rel}")
    return problems


def check(vendor_dir: Path) -> list[str]:
    """What differs between vendor_dir and its SHA256SUMS; empty when they agree."""
    return compare(read_sums(vendor_dir / SUMS_NAME), hash_tree(vendor_dir))


_CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)")


def css_reference_problems(vendor_dir: Path) -> list[str]:
    """Relative url()s in the vendored CSS that point at no vendored file."""
    problems = []
    for rel, path in sorted(managed_files(vendor_dir).items()):
        if not rel.endswith(".css"):
            continue
        for ref in _CSS_URL.findall(path.read_text("utf-8")):
            if ref.startswith(("data:", "#")) or "://" in ref:
                continue
            target = (path.parent / ref.split("#")[0].split("?")[0]).resolve()
            if not target.is_file():
                problems.append(f"{rel}: url({ref}) points at no file")
    return problems


# ---------------------------------------------------------------------------------------------
# Fetching.
# ---------------------------------------------------------------------------------------------
def npm_pack(packages: tuple[Package, ...], workdir: Path) -> dict[str, Path]:
    """Download the tarballs with `npm pack` (no install, no scripts); spec -> tarball path."""
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError("npm is not on PATH: fetching needs it (--check does not)")
    specs = [f"{p.npm}@{p.version}" for p in packages]
    env = dict(
        os.environ, npm_config_fund="false", npm_config_audit="false", npm_config_update_notifier="false"
    )
    # Run in the empty workdir, so no package.json or .npmrc of the repository is involved.
    result = subprocess.run(
        [npm, "pack", "--json", "--ignore-scripts", "--pack-destination", str(workdir), *specs],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise VendorError(f"npm pack failed ({result.returncode}):\n{result.stderr.strip()}")
    packed = {
        f"{entry['name']}@{entry['version']}": workdir / entry["filename"]
        for entry in json.loads(result.stdout)
    }
    missing = [s for s in specs if s not in packed]
    if missing:
        raise VendorError(f"npm pack did not return: {', '.join(missing)}")
    return packed


def integrity_of(tarball: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode("ascii")


def tar_files(tarball: Path) -> dict[str, bytes]:
    """The regular files of an npm tarball, by path without the tarball's top folder ("package/").

    Read in memory, never extracted, so a hostile path in the archive cannot write anywhere."""
    files = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            parts = PurePosixPath(member.name).parts
            if len(parts) < 2:
                continue
            f = tar.extractfile(member)
            assert f is not None
            files["/".join(parts[1:])] = f.read()
    return files


def select(pkg: Package, contents: dict[str, bytes]) -> dict[str, bytes]:
    """The files to vendor from one package: dest-relative path -> bytes."""
    out: dict[str, bytes] = {}
    wanted = dict(pkg.files)
    wanted.update({name: name for name in pkg.licences})
    for src, dst in wanted.items():
        src_dir, _, pattern = src.rpartition("/")
        if "*" in src_dir:
            raise VendorError(f"{pkg.npm}: `*` only in the last part of a path: {src}")
        if "*" in pattern:
            if not dst.endswith("/"):
                raise VendorError(f"{pkg.npm}: {src} matches many files; its destination must end in /")
            matches = sorted(
                p
                for p in contents
                if p.rpartition("/")[0] == src_dir and fnmatch.fnmatchcase(p.rpartition("/")[2], pattern)
            )
            if not matches:
                raise VendorError(f"{pkg.npm}@{pkg.version}: nothing matches {src}")
            for p in matches:
                out[dst + p.rpartition("/")[2]] = contents[p]
        else:
            if src not in contents:
                raise VendorError(f"{pkg.npm}@{pkg.version} has no {src}")
            out[dst] = contents[src]
    for dst, name in pkg.transforms.items():
        if dst not in out:
            raise VendorError(f"{pkg.npm}: transform {name} names {dst}, which is not vendored")
        out[dst] = TRANSFORMS[name](out[dst])
    return {f"{pkg.dest}/{rel}": data for rel, data in out.items()}


def build(stage: Path, workdir: Path) -> None:
    """Fetch every pinned package and write the vendored tree into stage."""
    tarballs = npm_pack(PACKAGES, workdir)
    bad = []
    for pkg in PACKAGES:
        got = integrity_of(tarballs[f"{pkg.npm}@{pkg.version}"])
        if got != pkg.integrity:
            bad.append(f"{pkg.npm}@{pkg.version}: tarball is {got}, pinned {pkg.integrity}")
    if bad:
        raise VendorError("tarball integrity differs from the pins:\n  " + "\n  ".join(bad))
    written: dict[str, str] = {}
    for pkg in PACKAGES:
        for rel, data in select(pkg, tar_files(tarballs[f"{pkg.npm}@{pkg.version}"])).items():
            if rel in written or rel in UNMANAGED:
                raise VendorError(
                    f"{rel} would be written by both {written.get(rel, 'the script')} and {pkg.npm}"
                )
            written[rel] = pkg.npm
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    problems = css_reference_problems(stage)
    if problems:
        raise VendorError("vendored CSS refers to missing files:\n  " + "\n  ".join(problems))


def replace_tree(vendor_dir: Path, stage: Path) -> None:
    """Make vendor_dir hold exactly the staged files (README.md and SHA256SUMS are kept)."""
    vendor_dir.mkdir(parents=True, exist_ok=True)
    for entry in vendor_dir.iterdir():
        if entry.name in UNMANAGED:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for entry in stage.iterdir():
        if entry.is_dir():
            shutil.copytree(entry, vendor_dir / entry.name)
        else:
            shutil.copy2(entry, vendor_dir / entry.name)


def fetch(vendor_dir: Path, update: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="vendor-") as tmp:
        workdir, stage = Path(tmp) / "npm", Path(tmp) / "stage"
        workdir.mkdir()
        stage.mkdir()
        build(stage, workdir)
        fetched = hash_tree(stage)
        sums_path = vendor_dir / SUMS_NAME
        if not update:
            problems = compare(read_sums(sums_path), fetched)
            if problems:
                raise VendorError(
                    f"the fetched files differ from {sums_path} (nothing was written):\n  "
                    + "\n  ".join(problems)
                    + "\nIf the change is intended (new pins), run with --update and review the diff."
                )
        replace_tree(vendor_dir, stage)
        if update:
            sums_path.write_text(format_sums(fetched), "utf-8")
    problems = check(vendor_dir)
    if problems:
        raise VendorError("static/vendor does not match its sums after copying:\n  " + "\n  ".join(problems))
    total = sum(p.stat().st_size for p in managed_files(vendor_dir).values())
    print(
        f"{len(fetched)} files, {total / 1024:.0f} KiB, in {vendor_dir}"
        + (" (SHA256SUMS rewritten)" if update else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="verify the files against SHA256SUMS only (no network)"
    )
    mode.add_argument("--update", action="store_true", help="fetch, copy and rewrite SHA256SUMS")
    parser.add_argument("--vendor-dir", type=Path, default=VENDOR_DIR, help="default: static/vendor")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check(args.vendor_dir)
            if problems:
                print(
                    f"{args.vendor_dir} does not match {SUMS_NAME}:", *problems, sep="\n  ", file=sys.stderr
                )
                return 1
            print(f"{len(read_sums(args.vendor_dir / SUMS_NAME))} vendored files match {SUMS_NAME}")
        else:
            fetch(args.vendor_dir, args.update)
    except VendorError as exc:
        print(f"vendor: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
