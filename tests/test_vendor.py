"""The vendored browser libraries in static/vendor/: unchanged since they were fetched, licensed,
complete, and served by the app. No network: only `scripts/vendor.py --check`, which hashes files."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "vendor.py"
VENDOR = ROOT / "static" / "vendor"
LICENCE_NAME = re.compile(r"(licen[cs]e|copying)([-.].*)?", re.IGNORECASE)


def load_script():
    spec = importlib.util.spec_from_file_location("vendor_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


vendor = load_script()


def run_check(vendor_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--vendor-dir", str(vendor_dir)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_vendored_files_match_their_sums():
    result = run_check(VENDOR)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert vendor.check(VENDOR) == []


def test_the_sums_cover_every_pinned_package():
    listed = vendor.read_sums(VENDOR / vendor.SUMS_NAME)
    for pkg in vendor.PACKAGES:
        assert any(rel.startswith(pkg.dest + "/") for rel in listed), f"nothing of {pkg.npm} in SHA256SUMS"


@pytest.fixture
def vendor_copy(tmp_path):
    copy = tmp_path / "vendor"
    shutil.copytree(VENDOR, copy)
    assert run_check(copy).returncode == 0
    return copy


def test_check_fails_when_a_vendored_file_changed(vendor_copy):
    target = vendor_copy / "dompurify" / "purify.min.js"
    target.write_bytes(target.read_bytes().replace(b"DOMPurify", b"DOMPurifx", 1))
    result = run_check(vendor_copy)
    assert result.returncode == 1
    assert "changed: dompurify/purify.min.js" in result.stderr


def test_check_fails_when_a_vendored_file_is_missing(vendor_copy):
    (vendor_copy / "katex" / "fonts" / "KaTeX_Main-Regular.woff2").unlink()
    result = run_check(vendor_copy)
    assert result.returncode == 1
    assert "missing: katex/fonts/KaTeX_Main-Regular.woff2" in result.stderr


def test_check_fails_on_a_file_the_sums_do_not_list(vendor_copy):
    (vendor_copy / "uplot" / "extra.js").write_text("alert(1)\n")
    result = run_check(vendor_copy)
    assert result.returncode == 1
    assert "not in SHA256SUMS: uplot/extra.js" in result.stderr


def test_check_fails_without_sums(vendor_copy):
    (vendor_copy / "SHA256SUMS").unlink()
    result = run_check(vendor_copy)
    assert result.returncode == 1
    assert "SHA256SUMS is missing" in result.stderr


def package_dirs() -> list[Path]:
    """Each folder holding one package's files: the top-level ones, and each pinned package's."""
    dirs = {p for p in VENDOR.iterdir() if p.is_dir()}
    dirs |= {VENDOR / pkg.dest for pkg in vendor.PACKAGES}
    return sorted(dirs)


def test_every_vendored_package_has_a_licence():
    assert len(package_dirs()) >= len({pkg.dest.split("/")[0] for pkg in vendor.PACKAGES})
    for folder in package_dirs():
        licences = [p for p in folder.iterdir() if p.is_file() and LICENCE_NAME.fullmatch(p.name)]
        assert licences, f"{folder.relative_to(ROOT)} has no licence file"
        assert all(p.stat().st_size > 100 for p in licences), f"an empty licence in {folder}"


def test_vendored_css_refers_only_to_vendored_files():
    assert vendor.css_reference_problems(VENDOR) == []
    # KaTeX's CSS names each font once, as woff2, and every one of them is here.
    css = (VENDOR / "katex" / "katex.min.css").read_text("utf-8")
    fonts = re.findall(r"url\((fonts/[^)]+)\)", css)
    assert fonts and all(f.endswith(".woff2") for f in fonts)
    assert sorted(set(fonts)) == sorted(f"fonts/{p.name}" for p in (VENDOR / "katex" / "fonts").iterdir())


def test_readme_names_every_pinned_version():
    readme = (VENDOR / "README.md").read_text("utf-8")
    for pkg in vendor.PACKAGES:
        assert f"{pkg.npm}@{pkg.version}" in readme, (
            f"static/vendor/README.md does not mention {pkg.npm}@{pkg.version}"
        )


@pytest.mark.parametrize(
    "path, content_type",
    [
        ("vendor/markdown-it/markdown-it.umd.min.js", "text/javascript"),
        ("vendor/katex/katex.min.css", "text/css"),
        ("vendor/katex/fonts/KaTeX_Main-Regular.woff2", "font/woff2"),
        ("vendor/highlight.js/styles/github-dark.min.css", "text/css"),
    ],
)
def test_the_app_serves_vendored_files(path, content_type):
    response = Client().get(f"/static/{path}")
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == content_type
    assert b"".join(response.streaming_content) == (VENDOR / path.removeprefix("vendor/")).read_bytes()
