"""Programming language of a source file, from its name, else from its `#!` line.

Names follow GitHub Linguist / The Stack so that per-language statistics line up with published corpora.
"""

from __future__ import annotations

import os
import re

_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "Python": (".py", ".pyi", ".pyw"),
    "Cython": (".pyx", ".pxd", ".pxi"),
    "C": (".c", ".h"),
    "C++": (".cc", ".cpp", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ipp", ".tpp"),
    "CUDA": (".cu", ".cuh"),
    "C#": (".cs", ".csx"),
    "Java": (".java",),
    "Kotlin": (".kt", ".kts"),
    "Scala": (".scala", ".sc"),
    "Groovy": (".groovy", ".gradle"),
    "Go": (".go",),
    "Rust": (".rs",),
    "Zig": (".zig",),
    "Nim": (".nim",),
    "JavaScript": (".js", ".mjs", ".cjs", ".jsx"),
    "TypeScript": (".ts", ".mts", ".cts", ".tsx"),
    "Ruby": (".rb", ".rake", ".gemspec"),
    "PHP": (".php", ".phtml"),
    "Perl": (".pl", ".pm", ".t"),
    "Lua": (".lua",),
    "R": (".r",),
    "Julia": (".jl",),
    "Swift": (".swift",),
    "Objective-C": (".m", ".mm"),
    "Dart": (".dart",),
    "Haskell": (".hs", ".lhs"),
    "OCaml": (".ml", ".mli"),
    "F#": (".fs", ".fsi", ".fsx"),
    "Elixir": (".ex", ".exs"),
    "Erlang": (".erl", ".hrl"),
    "Clojure": (".clj", ".cljs", ".cljc", ".edn"),
    "Common Lisp": (".lisp", ".lsp"),
    "Scheme": (".scm", ".ss"),
    "Racket": (".rkt",),
    "Emacs Lisp": (".el",),
    "Fortran": (".f", ".for", ".f90", ".f95", ".f03", ".f08"),
    "Visual Basic .NET": (".vb",),
    "Assembly": (".asm", ".s"),
    "Shell": (".sh", ".bash", ".zsh", ".ksh"),
    "PowerShell": (".ps1", ".psm1", ".psd1"),
    "Batchfile": (".bat", ".cmd"),
    "SQL": (".sql",),
    "Solidity": (".sol",),
    "Verilog": (".v", ".sv", ".svh"),
    "VHDL": (".vhd", ".vhdl"),
    "Vim Script": (".vim",),
    "Protocol Buffer": (".proto",),
    "CMake": (".cmake",),
    "Makefile": (".mk", ".mak"),
    "HTML": (".html", ".htm", ".xhtml"),
    "CSS": (".css", ".scss", ".sass", ".less"),
    "Markdown": (".md", ".markdown"),
    "reStructuredText": (".rst",),
    "TeX": (".tex", ".sty", ".cls"),
    "YAML": (".yml", ".yaml"),
    "TOML": (".toml",),
    "JSON": (".json",),
    "XML": (".xml", ".xsd", ".xsl", ".xslt"),
    "INI": (".ini", ".cfg"),
}

_FILENAMES: dict[str, str] = {
    "Makefile": "Makefile",
    "makefile": "Makefile",
    "GNUmakefile": "Makefile",
    "Dockerfile": "Dockerfile",
    "Containerfile": "Dockerfile",
    "CMakeLists.txt": "CMake",
    "Rakefile": "Ruby",
    "Gemfile": "Ruby",
    "Jenkinsfile": "Groovy",
    "BUILD": "Starlark",
    "BUILD.bazel": "Starlark",
    "WORKSPACE": "Starlark",
    ".bashrc": "Shell",
    ".zshrc": "Shell",
}

_INTERPRETERS: dict[str, str] = {
    "python": "Python",
    "sh": "Shell",
    "bash": "Shell",
    "zsh": "Shell",
    "ksh": "Shell",
    "perl": "Perl",
    "ruby": "Ruby",
    "node": "JavaScript",
    "php": "PHP",
    "lua": "Lua",
    "Rscript": "R",
    "julia": "Julia",
}

_BY_EXTENSION = {ext: language for language, exts in _EXTENSIONS.items() for ext in exts}
_SHEBANG = re.compile(rb"^#!\s*\S*/(?:env\s+(?:-\S+\s+)*)?([A-Za-z]+)")

# Assembly's `.S` (preprocessed) and R's `.R` differ from other names only by case.
_CASE_SENSITIVE = {".S": "Assembly", ".R": "R"}


def languages() -> list[str]:
    """Every language this module can name."""
    return sorted({*_EXTENSIONS, *_FILENAMES.values(), *_INTERPRETERS.values()})


def language_from_name(relative_path: str) -> str | None:
    name = os.path.basename(relative_path)
    if name in _FILENAMES:
        return _FILENAMES[name]
    _, extension = os.path.splitext(name)
    if extension in _CASE_SENSITIVE:
        return _CASE_SENSITIVE[extension]
    return _BY_EXTENSION.get(extension.lower())


def language_from_shebang(head: bytes) -> str | None:
    """`#!/usr/bin/env python3` -> Python; trailing version digits are ignored."""
    match = _SHEBANG.match(head)
    if not match:
        return None
    return _INTERPRETERS.get(match.group(1).decode("ascii"))


def detect_language(relative_path: str, head: bytes) -> str | None:
    return language_from_name(relative_path) or language_from_shebang(head)
