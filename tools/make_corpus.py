#!/usr/bin/python3
"""Build the bilingual (Japanese + English) Debian documentation corpus.

Sources are Debian documentation packages that ship the same text in both
languages (see data/corpus/README.md).  Missing packages are installed with
apt-get, which needs root; pass --no-install to only use what is installed.

Output: JSON Lines, one document (an HTML section or a man page) per line:
  {"id", "lang": "en"|"ja", "source": "package:path[#anchor]", "text", "pair", "split"}
"pair" is the id of the same section / man page in the other language or null;
"split" is "train", "valid" or "test" (split_of below).
Output is deterministic for a given set of installed package versions
(sorted by id, no timestamps).

Usage:
  sudo /usr/bin/python3 tools/make_corpus.py            # full corpus -> data/build/
  /usr/bin/python3 tools/make_corpus.py --subset-only   # re-cut the committed subset
  /usr/bin/python3 tools/make_corpus.py --resplit       # only (re)write its split fields
  /usr/bin/python3 tools/make_corpus.py --po            # message catalogues -> data/corpus/debian-po.jsonl.gz

--po: the English messages and their Japanese translations of the programs in PO_PACKAGES (their
compiled catalogues, usr/share/locale/ja/LC_MESSAGES/*.mo and LibreOffice's), fetched with
`apt-get download` into data/build/debs/ and unpacked with dpkg-deb (no install, no root): a
parallel corpus whose every document has its translation as `pair`.

Standard library only (plus man/groff from Debian for man pages).
"""
import argparse
import gzip
import hashlib
import html.parser
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

PACKAGES = [
    "debian-reference-en", "debian-reference-ja",
    "developers-reference", "developers-reference-ja",
    "maint-guide", "maint-guide-ja",
    "debian-faq", "debian-faq-ja",
    "debian-handbook",
    "manpages", "manpages-dev", "manpages-ja",
]

# (collection name, package per language, directory per language, file-name
# pattern per language).  The pairing key of a file is the regex group "key".
HTML_SETS = [
    ("debian-reference",
     {"en": "debian-reference-en", "ja": "debian-reference-ja"},
     {"en": "/usr/share/debian-reference", "ja": "/usr/share/debian-reference"},
     {"en": r"^(?P<key>(?:ch\d\d|apa|pr01))\.en\.html$",
      "ja": r"^(?P<key>(?:ch\d\d|apa|pr01))\.ja\.html$"}),
    ("developers-reference",
     {"en": "developers-reference", "ja": "developers-reference-ja"},
     {"en": "/usr/share/developers-reference", "ja": "/usr/share/developers-reference/ja"},
     {"en": r"^(?!index|search|genindex|developers-reference)(?P<key>[a-z-]+)\.html$",
      "ja": r"^(?!index|search|genindex|developers-reference)(?P<key>[a-z-]+)\.html$"}),
    ("maint-guide",
     {"en": "maint-guide", "ja": "maint-guide-ja"},
     {"en": "/usr/share/doc/maint-guide/html", "ja": "/usr/share/doc/maint-guide-ja/html"},
     {"en": r"^(?!index)(?P<key>[a-z]+)\.en\.html$",
      "ja": r"^(?!index)(?P<key>[a-z]+)\.ja\.html$"}),
    ("debian-faq",
     {"en": "debian-faq", "ja": "debian-faq-ja"},
     {"en": "/usr/share/doc/debian/FAQ", "ja": "/usr/share/doc/debian/FAQ/ja"},
     {"en": r"^(?!index)(?P<key>[a-z-]+)\.en\.html$",
      "ja": r"^(?!index)(?P<key>[a-z-]+)\.ja\.html$"}),
    ("debian-handbook",
     {"en": "debian-handbook", "ja": "debian-handbook"},
     {"en": "/usr/share/doc/debian-handbook/html/en-US",
      "ja": "/usr/share/doc/debian-handbook/html/ja-JP"},
     {"en": r"^(?!index)(?P<key>[a-z][a-z0-9.-]*)\.html$",
      "ja": r"^(?!index)(?P<key>[a-z][a-z0-9.-]*)\.html$"}),
]

MAN_JA_ROOT = "/usr/share/man/ja"
MAN_EN_ROOT = "/usr/share/man"
MAN_SECTIONS = "12345678"

JA_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")
CJK_PUNCT = "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
CJK_NL = re.compile(r"(?<=[%s])[ \t]*\n\s*(?=[%s])" % (CJK_PUNCT, CJK_PUNCT))

# ---------------------------------------------------------------- HTML -> text

BLOCK = {"p", "div", "section", "article", "li", "dt", "dd", "tr", "table",
         "ul", "ol", "dl", "blockquote", "pre", "h1", "h2", "h3", "h4", "h5",
         "h6", "br", "hr", "td", "th", "caption", "figure", "body"}
DROP_TAGS = {"script", "style", "nav", "head", "noscript", "svg", "form"}
DROP_CLASSES = {"navheader", "navfooter", "docnav", "toc", "sphinxsidebar",
                "related", "footer", "headerlink", "searchformwrapper",
                "list-of-tables", "list-of-figures", "list-of-examples"}
DROP_IDS = {"banner", "title", "searchbox"}
VOID = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base",
        "wbr", "source", "param", "embed"}


class Sectioner(html.parser.HTMLParser):
    """Splits an HTML page into sections at <h1>/<h2> and extracts text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections = []          # [anchor, [chunks]]
        self.cur = [None, []]
        self.skip_tag = None
        self.skip_depth = 0
        self.pre = 0
        self.last_id = None
        self.in_heading = None      # (tag, id seen before it)
        self.heading_id = None
        self.cell = 0

    def _brk(self, tag, end):
        # tables: \x01 starts a cell, \x02 ends a row, \x03 ends a table
        if tag in ("td", "th"):
            return "" if end else "\x01"
        if tag == "tr":
            return "\x02" if end else ""
        if tag == "table":
            return "\x03" if end else "\n\n"
        if self.cell:
            return " "
        return "\n\n" if tag in ("p", "pre", "h1", "h2", "h3", "h4", "table",
                                 "dl") else "\n"

    def _new_section(self):
        self.sections.append(self.cur)
        self.cur = [None, []]

    def handle_starttag(self, tag, attrs):
        if self.skip_tag is not None:
            if tag == self.skip_tag and tag not in VOID:
                self.skip_depth += 1
            return
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if (tag in DROP_TAGS or classes & DROP_CLASSES
                or a.get("id") in DROP_IDS or a.get("role") == "navigation"):
            if tag not in VOID:
                self.skip_tag, self.skip_depth = tag, 1
            return
        if a.get("id"):
            if self.in_heading is not None:
                self.heading_id = self.heading_id or a["id"]
            else:
                self.last_id = a["id"]
        if tag in ("h1", "h2"):
            self._new_section()
            self.in_heading = (tag, self.last_id)
            self.heading_id = a.get("id")
        if tag == "pre":
            self.pre += 1
        if tag in ("td", "th"):
            self.cell += 1
        if tag in BLOCK:
            self.cur[1].append(self._brk(tag, False))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID and self.skip_tag == tag and self.skip_depth == 1:
            self.skip_tag, self.skip_depth = None, 0

    def handle_endtag(self, tag):
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if self.in_heading is not None and tag == self.in_heading[0]:
            self.cur[0] = self.heading_id or self.in_heading[1]
            self.in_heading = None
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in ("td", "th"):
            self.cell = max(0, self.cell - 1)
        if tag in BLOCK:
            self.cur[1].append(self._brk(tag, True))

    def handle_data(self, data):
        if self.skip_tag is not None:
            return
        if self.pre:
            # keep code layout; mark lines so the whitespace pass leaves them
            self.cur[1].append(data.replace("\n", "\x00"))
        else:
            data = CJK_NL.sub("", data)
            self.cur[1].append(re.sub(r"\s+", " ", data))

    def finish(self):
        self.close()
        self._new_section()
        out = []
        for anchor, chunks in self.sections:
            text = clean_text("".join(chunks))
            if text:
                out.append((anchor, text))
        return out


def clean_text(s):
    s = re.sub("\x02\\s*(?=\\S)", "\n", s).replace("\x02", "\n")
    s = s.replace("\x03", "\n\n")
    s = "\n".join(" | ".join(c.strip() for c in l.split("\x01") if c.strip())
                  if "\x01" in l else l for l in s.split("\n"))
    lines = []
    for para in re.split(r"\n\s*\n", s):
        para = "\n".join(l.strip(" ") for l in para.split("\n"))
        para = re.sub(r"\n+", "\n", para).strip()
        para = para.replace("\x00", "\n")
        if para:
            lines.append(para)
    text = "\n\n".join(lines)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def html_sections(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        src = f.read()
    p = Sectioner()
    p.feed(src)
    return p.finish()


def ja_ratio(text):
    letters = sum(1 for c in text if c.isalpha())
    return len(JA_CHAR.findall(text)) / max(1, letters)


def drop_untranslated(text):
    """In a Japanese document drop long prose paragraphs with no Japanese at
    all (untranslated English left by po4a/publican); code stays."""
    keep = []
    for para in text.split("\n\n"):
        if len(para) >= 120 and not JA_CHAR.search(para):
            prose = sum(1 for c in para if c.isalpha() or c == " ") / len(para)
            if prose > 0.85:
                continue
        keep.append(para)
    return "\n\n".join(keep)


def collect_html(sets=None, roots=None):
    """Sections of the HTML manuals of sets (default HTML_SETS, installed); roots maps a package
    to the folder it was unpacked into (--help-docs), else its files are where it installs them."""
    docs = []
    for coll, pkgs, dirs, pats in sets or HTML_SETS:
        per_lang = {}
        for lang in ("en", "ja"):
            d = (roots or {}).get(pkgs[lang], "") + dirs[lang]
            if not os.path.isdir(d):
                print("warning: missing", d, file=sys.stderr)
                continue
            pat = re.compile(pats[lang])
            files = {}
            for name in sorted(os.listdir(d)):
                m = pat.match(name)
                if m and os.path.isfile(os.path.join(d, name)):
                    files[m.group("key")] = os.path.join(d, name)
            per_lang[lang] = files
        for lang, files in per_lang.items():
            for key, path in sorted(files.items()):
                secs = html_sections(path)
                for idx, (anchor, text) in enumerate(secs):
                    docs.append({
                        "coll": coll, "lang": lang, "file": key, "idx": idx,
                        "nsec": len(secs), "anchor": anchor, "text": text,
                        "source": "%s:%s%s" % (pkgs[lang], path,
                                               "#" + anchor if anchor else ""),
                    })
    # ids and pairs: by (collection, file, anchor) when the anchor is unique
    # in the file in both languages; otherwise by section index when both
    # files have the same number of sections.
    by_key = {}
    for d in docs:
        by_key.setdefault((d["coll"], d["file"], d["lang"]), []).append(d)
    for (coll, f, lang), lst in by_key.items():
        anchors = [d["anchor"] for d in lst]
        for d in lst:
            a = d["anchor"]
            d["sec"] = a if a and anchors.count(a) == 1 else "s%03d" % d["idx"]
            d["id"] = "%s/%s/%s#%s" % (coll, lang, f, d["sec"])
    for (coll, f, lang), lst in by_key.items():
        other = by_key.get((coll, f, "ja" if lang == "en" else "en"), [])
        osec = {d["sec"]: d for d in other}
        for d in lst:
            o = osec.get(d["sec"])
            if o is None and len(other) == len(lst):
                o = other[d["idx"]]
            d["pair_id"] = o["id"] if o is not None else None
    return docs

# ------------------------------------------------------------ man -> text


def man_name(fname):
    m = re.match(r"^(?P<name>.+)\.(?P<sec>[1-8][a-z0-9]*)(?:\.gz)?$", fname)
    return (m.group("name"), m.group("sec")) if m else None


def list_man(root, sections, exclude_lang_dirs):
    out = {}
    for s in sections:
        d = os.path.join(root, "man" + s)
        if not os.path.isdir(d):
            continue
        for fname in sorted(os.listdir(d)):
            p = os.path.join(d, fname)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            nm = man_name(fname)
            if nm:
                out[nm] = p
    return out


def read_roff(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        return f.read()


def render_man(path):
    raw = read_roff(path)
    lines = [l for l in raw.split(b"\n") if l.strip() and not l.startswith(b'.\\"')]
    if len(lines) <= 2 and any(l.startswith(b".so ") for l in lines):
        return None  # alias stub
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8")
    # very long lines (no hyphenation, continuous page): each paragraph comes
    # out as one line, so no re-flowing is needed afterwards
    cmd = ("preconv -e UTF-8 | tbl | groff -Tutf8 -mandoc -rLL=1000n -rHY=0 "
           "-rcR=1 -P-c 2>/dev/null | col -b -x")
    try:
        r = subprocess.run(["sh", "-c", cmd], input=raw, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        return None
    text = r.stdout.decode("utf-8", errors="replace")
    return clean_man(text)


RULE_LINE = re.compile(r"^[\u2500-\u257f\s=_+|-]+$")
BOX_RUN = re.compile(r"([\u2500-\u257f])\1{2,}")


def clean_man(text):
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = text.split("\n")
    # drop the running header (first line) and footer (last line)
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines and re.match(r"^\S+\([0-9A-Za-z]+\)", lines[0]):
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and (not lines[-1].startswith("   ")
                  or re.search(r"\s{3,}\S+\([0-9A-Za-z]+\)\s*$", lines[-1])):
        lines.pop()
    out = []
    for l in lines:
        s = l.strip()
        # tbl rules are drawn across the whole (very long) line: drop rule
        # lines, shorten runs of box-drawing characters inside table rows
        if s and RULE_LINE.match(s):
            continue
        s = BOX_RUN.sub(lambda m: m.group(0)[0], s)
        s = re.sub(r"(?<=\S) {2,}(?=\S)", " ", s)
        out.append(s)
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def dpkg_owners(paths):
    owners = {}
    paths = list(paths)
    for i in range(0, len(paths), 500):
        chunk = paths[i:i + 500]
        r = subprocess.run(["dpkg", "-S"] + chunk, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        for line in r.stdout.splitlines():
            if ": " in line:
                pk, p = line.split(": ", 1)
                if p in chunk:
                    owners[p] = pk.split(",")[0].split(":")[0].strip()
    return owners


def collect_man(jobs):
    ja = list_man(MAN_JA_ROOT, MAN_SECTIONS, True)
    en_all = list_man(MAN_EN_ROOT, MAN_SECTIONS, True)
    owners = dpkg_owners(list(en_all.values()) + list(ja.values()))
    # English: the Linux man-pages project (manpages, manpages-dev) plus the
    # English original of every page manpages-ja translates, if installed.
    en = {k: p for k, p in en_all.items()
          if owners.get(p) in ("manpages", "manpages-dev") or k in ja}
    todo = [("ja", k, p) for k, p in sorted(ja.items())] + \
           [("en", k, p) for k, p in sorted(en.items())]
    with ThreadPoolExecutor(max_workers=jobs) as ex:
        texts = list(ex.map(lambda t: render_man(t[2]), todo))
    docs = []
    have = {}
    for (lang, k, p), text in zip(todo, texts):
        if not text:
            continue
        name, sec = k
        d = {"coll": "man", "lang": lang, "id": "man/%s/%s.%s" % (lang, name, sec),
             "source": "%s:%s" % (owners.get(p, "unknown"), p), "text": text,
             "key": k}
        docs.append(d)
        have[(lang, k)] = d
    for d in docs:
        o = have.get(("ja" if d["lang"] == "en" else "en", d["key"]))
        d["pair_id"] = o["id"] if o else None
    return docs

# ------------------------------------------------------------------- main


# Debian 12 packages whose Japanese message catalogues --po reads (all of them DFSG-free, main).
PO_PACKAGES = [
    "adduser", "appstream", "apt", "aptitude-common", "at-spi2-common", "bash", "binutils-common", "bison",
    "coreutils", "cpio", "diffutils", "dpkg", "evince-common", "evolution-common",
    "evolution-data-server-common", "findutils", "gawk", "gcc-12-locales", "gedit-common", "gettext",
    "gettext-base", "gimp-data", "gnome-control-center-data", "gnome-shell-common", "gnucash-common",
    "gnupg-l10n", "grep", "gsettings-desktop-schemas", "ibus-data", "inkscape", "iso-codes",
    "libapt-pkg6.0", "libc-l10n", "libexif12", "libgdk-pixbuf2.0-common", "libglib2.0-data",
    "libgnomekbd-common", "libgphoto2-port12", "libgstreamer-plugins-base1.0-0", "libgstreamer1.0-0",
    "libgtk-3-common", "libgtk2.0-common", "libgweather-4-common", "libidn2-0", "libpam-runtime",
    "libreoffice-l10n-ja", "login", "make", "man-db", "mc-data", "mutter-common", "nano",
    "nautilus-data", "net-tools", "network-manager", "packagekit", "psmisc", "python-apt-common",
    "rhythmbox-data", "sed", "shared-mime-info", "shotwell-common", "software-properties-common",
    "sudo", "synaptic", "systemd", "tar", "thunar-data", "totem-common", "util-linux-locales", "wget",
    "xdg-user-dirs", "xfce4-panel", "xkb-data",
    # applications and games with large Japanese catalogues (the games' are narrative prose)
    "brasero-common", "claws-mail-i18n", "darktable", "deja-dup", "digikam-data", "dolphin", "eog",
    "epiphany-browser-data", "freeciv-data", "geary", "gnome-disk-utility", "gnome-software-common",
    "gnome-system-monitor", "gnome-terminal-data", "gnumeric-common", "gramps", "kdenlive-data", "konsole",
    "libgimp2.0", "lyx-common", "meld", "pidgin-data", "pitivi", "poedit-common", "seahorse",
    "sylpheed-i18n", "vlc-l10n", "wesnoth-1.16-data", "widelands-data",
    "atril-common", "blueman", "bleachbit", "caja-common", "cinnamon-l10n", "dia-common", "gnote", "gnubg-data",
    "gthumb-data", "gvfs-common", "homebank-data", "kstars-data", "mate-control-center-common",
    "mate-panel-common", "mousepad", "network-manager-gnome", "pluma-common", "remmina-common",
    "system-config-printer-common", "wxmaxima", "xfce4-settings", "xfce4-terminal", "zim",
]
PO_CHUNK = 3000  # English characters per document: consecutive messages of one catalogue


def read_mo(path):
    """(msgid, msgstr) of a compiled gettext catalogue (the GNU .mo format: magic, count, offsets
    of the original and translation string tables), header entry left out; for plural entries the
    first form of each."""
    import struct
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 28:
        raise ValueError("%s: not a .mo file (too short)" % path)
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic == 0x950412de else ">" if magic == 0xde120495 else None
    if end is None:
        raise ValueError("%s: not a .mo file (magic %#x)" % (path, magic))
    n, o_off, t_off = struct.unpack(end + "3I", data[8:20])

    def string(table, i):
        length, off = struct.unpack(end + "2I", data[table + 8 * i:table + 8 * i + 8])
        if off + length > len(data):
            raise ValueError("%s: string %d runs past the end" % (path, i))
        return data[off:off + length]

    pairs = [(string(o_off, i), string(t_off, i)) for i in range(n)]
    header = dict(pairs).get(b"", b"").decode("ascii", "replace")
    m = re.search(r"charset=([A-Za-z0-9_-]+)", header)
    cs = m.group(1) if m else "utf-8"
    out = []
    for k, v in pairs:
        if k:  # the header's msgid is empty
            out.append((k.split(b"\0")[0].decode(cs), v.split(b"\0")[0].decode(cs)))
    return out


def po_catalogues(pkg, root):
    """The Japanese catalogues an unpacked package holds: (domain, path) sorted."""
    found = []
    for dirpath, _, files in os.walk(root):
        if dirpath.replace(os.sep, "/").endswith("/ja/LC_MESSAGES"):
            found += [(f[:-3], os.path.join(dirpath, f)) for f in files if f.endswith(".mo")]
    return sorted(found)


def fetch_debs(packages, debs):
    """apt-get download of the packages not yet in debs/; returns {package: (version, .deb path)}."""
    os.makedirs(debs, exist_ok=True)
    have = {f.split("_")[0]: f for f in os.listdir(debs) if f.endswith(".deb")}
    missing = [p for p in packages if p not in have]
    if missing:
        print("apt-get download:", " ".join(missing), file=sys.stderr)
        subprocess.run(["apt-get", "download"] + missing, cwd=debs, check=True)
        have = {f.split("_")[0]: f for f in os.listdir(debs) if f.endswith(".deb")}
    out = {}
    for p in packages:
        if p not in have:
            sys.exit("make_corpus: apt-get download left no .deb of %s in %s" % (p, debs))
        out[p] = (have[p].split("_")[1].replace("%3a", ":"), os.path.join(debs, have[p]))
    return out


def deb_licences(root, pkg):
    """The licences a package's copyright file names: the DEP-5 short names, else (a free-form
    file) which of GPL, LGPL, MIT/X11 it mentions; a doc directory that is a symlink names the
    package it links to."""
    doc = os.path.join(root, "usr/share/doc", pkg)
    if os.path.islink(doc):
        return "as package %s (its doc directory links there)" % os.path.basename(os.readlink(doc))
    try:
        text = open(os.path.join(doc, "copyright"), encoding="utf-8", errors="replace").read()
    except OSError:
        return "no copyright file"
    names = []
    for m in re.finditer(r"^License:[ \t]*(\S.*)$", text, re.M):
        if m.group(1).strip() not in names:
            names.append(m.group(1).strip())
    if names:
        return ", ".join(names)
    free = [name for name, pat in (("LGPL", r"\bLGPL|GNU (Lesser|Library) General Public License"),
                                   ("GPL", r"\bGPL|GNU General Public License"),
                                   ("MIT/X11-style", r"\bMIT\b|\bX11\b|Permission is hereby granted"))
            if re.search(pat, text)]
    return "free-form copyright file: " + (", ".join(free) if free else "see it")


def unpack_po(deb, pkg, dest, files=r"(^|/)ja/LC_MESSAGES/[^/]+\.mo$"):
    """From a .deb, only the files matching `files` (default: the Japanese catalogues --po reads)
    and the package's doc entry (copyright file, or the symlink a doc directory may be), through
    dpkg-deb --fsys-tarfile."""
    import tarfile
    want = re.compile(r"%s|^\.?/?usr/share/doc/%s(/copyright)?$" % (files, re.escape(pkg)))
    os.makedirs(dest, exist_ok=True)
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for m in tar:
            name = os.path.normpath(m.name.lstrip("./"))
            if not want.search(m.name) or name.startswith("..") or not (m.isfile() or m.issym()):
                continue
            path = os.path.join(dest, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if m.issym():  # kept as a link: deb_licences names its target
                os.symlink(m.linkname, path)
            else:
                with open(path, "wb") as f:
                    f.write(tar.extractfile(m).read())
    if proc.wait() != 0:
        sys.exit("make_corpus: dpkg-deb --fsys-tarfile %s failed" % deb)


# --help-docs: manuals shipped in both languages as separate packages, read from the .deb files
HELP_SETS = [
    ("gimp-help",
     {"en": "gimp-help-en", "ja": "gimp-help-ja"},
     {"en": "/usr/share/gimp/2.0/help/en", "ja": "/usr/share/gimp/2.0/help/ja"},
     {"en": r"^(?!index)(?P<key>[a-z0-9][a-z0-9._-]*)\.html$",
      "ja": r"^(?!index)(?P<key>[a-z0-9][a-z0-9._-]*)\.html$"}),
]


def collect_help(build, min_chars):
    """The HELP_SETS manuals (apt-get download, their HTML and copyright files unpacked under
    build/help-root/), sectioned and paired as collect_html does. Returns (docs, sources)."""
    pkgs = sorted({p for _, ps, _, _ in HELP_SETS for p in ps.values()})
    debs = fetch_debs(pkgs, os.path.join(build, "debs"))
    roots, sources = {}, []
    for pkg in pkgs:
        root = roots[pkg] = os.path.join(build, "help-root", pkg)
        if not os.path.isdir(root):
            unpack_po(debs[pkg][1], pkg, root + ".part", files=r"\.html$")
            os.rename(root + ".part", root)
        sources.append((pkg, debs[pkg][0], deb_licences(root, pkg)))
    return finalize(collect_html(HELP_SETS, roots), min_chars), sources


def collect_po(build, min_chars):
    """Documents of the catalogues: per catalogue, runs of consecutive messages (in the catalogue's
    msgid order) of about PO_CHUNK English characters, the English side the msgids, the Japanese
    the msgstrs, one message per paragraph. A message is left out when it has no letter, when its
    translation is empty or the same text, or when an earlier catalogue (packages in PO_PACKAGES'
    sorted order) had the same msgid, so no message text repeats. Returns (docs, sources)."""
    debs = fetch_debs(sorted(PO_PACKAGES), os.path.join(build, "debs"))
    seen, docs, sources = set(), [], []
    for pkg in sorted(PO_PACKAGES):
        version, deb = debs[pkg]
        root = os.path.join(build, "po-root", pkg)
        if not os.path.isdir(root):  # unpacked beside, then renamed: a failed unpack leaves no half tree
            unpack_po(deb, pkg, root + ".part")
            os.rename(root + ".part", root)
        cats = po_catalogues(pkg, root)
        if not cats:
            sys.exit("make_corpus: %s %s has no Japanese .mo catalogue: remove it from PO_PACKAGES" % (pkg, version))
        n_msgs = 0
        for domain, path in cats:
            msgs = []
            for en, ja in read_mo(path):
                if not re.search(r"[A-Za-z]", en) or not ja.strip() or ja.strip() == en.strip() or en in seen:
                    continue
                seen.add(en)
                msgs.append((en.strip(), ja.strip()))
            n_msgs += len(msgs)
            rel = "/" + os.path.relpath(path, root)
            chunk, size, part = [], 0, 0
            for i, m in enumerate(msgs):
                chunk.append(m)
                size += len(m[0])
                if size >= PO_CHUNK or i == len(msgs) - 1:
                    ids = {l: "po/%s/%s/%s/%d" % (l, pkg, domain, part) for l in ("en", "ja")}
                    for l, k in (("en", 0), ("ja", 1)):
                        docs.append({"id": ids[l], "lang": l, "source": "%s:%s#%d" % (pkg, rel, part),
                                     "text": "\n\n".join(x[k] for x in chunk),
                                     "pair_id": ids["ja" if l == "en" else "en"]})
                    chunk, size, part = [], 0, part + 1
        sources.append((pkg, version, len(cats), n_msgs, deb_licences(root, pkg)))
    return finalize(docs, min_chars), sources


def split_of(doc_id):
    """The deterministic document split (every tool uses this one, and each row carries it as
    "split"): b = first byte of SHA-256(UTF-8 id); b < 205 -> train (80.1 %),
    b < 231 -> valid (10.2 %), else test (9.8 %)."""
    b = hashlib.sha256(doc_id.encode("utf-8")).digest()[0]
    return "train" if b < 205 else ("valid" if b < 231 else "test")


def ensure_packages(no_install):
    missing = []
    for p in PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if "install ok installed" not in r.stdout:
            missing.append(p)
    if missing and not no_install:
        print("installing (needs root):", " ".join(missing), file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"] + missing,
                       check=True, env=env)
    elif missing:
        print("warning: not installed:", " ".join(missing), file=sys.stderr)


def finalize(docs, min_chars):
    out = []
    for d in docs:
        text = d["text"]
        if d["lang"] == "ja":
            text = drop_untranslated(text)
            if ja_ratio(text) < 0.2:   # untranslated page/section
                continue
        if len(text) < min_chars:
            continue
        out.append({"id": d["id"], "lang": d["lang"], "source": d["source"],
                    "text": text, "pair": d["pair_id"]})
    ids = {d["id"] for d in out}
    for d in out:
        if d["pair"] not in ids:
            d["pair"] = None
    out.sort(key=lambda d: d["id"])
    return out


def stats(docs, label):
    print("== %s" % label)
    for lang in ("en", "ja"):
        ds = [d for d in docs if d["lang"] == lang]
        ch = sum(len(d["text"]) for d in ds)
        mb = sum(len(d["text"].encode("utf-8")) for d in ds) / 1e6
        paired = sum(1 for d in ds if d["pair"])
        print("  %s: %6d documents, %6d paired, %10d characters, %7.2f MB UTF-8"
              % (lang, len(ds), paired, ch, mb))


def write_jsonl(docs, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = "".join(json.dumps({**d, "split": split_of(d["id"])}, ensure_ascii=False, sort_keys=False) + "\n"
                   for d in docs).encode("utf-8")
    if path.endswith(".gz"):
        # mtime=0 and no file name: byte-identical output on every run
        with open(path, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                               compresslevel=9) as f:
                f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def read_jsonl(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rt", encoding="utf-8") as f:
        return [json.loads(l) for l in f]


def make_subset(docs, budget_bytes):
    """Balanced subset: the same UTF-8 byte budget per language.  Paired
    documents are taken first (both sides), then unpaired ones, each in the
    order of SHA-256("subset:" + id): deterministic, spread over sources and
    independent of the train/valid/test split."""
    by_id = {d["id"]: d for d in docs}
    chosen = set()
    used = {"en": 0, "ja": 0}

    def size(d):
        return len(d["text"].encode("utf-8"))

    def h(d):
        # salted: must not correlate with split_of(), which hashes the bare id
        return hashlib.sha256(("subset:" + d["id"]).encode()).hexdigest()

    for d in sorted((d for d in docs if d["pair"] and d["lang"] == "ja"), key=h):
        o = by_id[d["pair"]]
        if used["ja"] + size(d) <= budget_bytes and used["en"] + size(o) <= budget_bytes:
            chosen.update((d["id"], o["id"]))
            used["ja"] += size(d)
            used["en"] += size(o)
    for d in sorted((d for d in docs if d["id"] not in chosen), key=h):
        if used[d["lang"]] + size(d) <= budget_bytes:
            chosen.add(d["id"])
            used[d["lang"]] += size(d)
    return [d for d in docs if d["id"] in chosen]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/build/debian-docs.full.jsonl")
    ap.add_argument("--subset", default="data/corpus/debian-docs.jsonl.gz")
    ap.add_argument("--subset-mb", type=float, default=10.4,
                    help="UTF-8 megabytes of text per language in the subset")
    ap.add_argument("--min-chars", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--subset-only", action="store_true",
                    help="read --out and only re-cut the subset")
    ap.add_argument("--resplit", action="store_true",
                    help="only rewrite --subset with every row's split field (split_of)")
    ap.add_argument("--po", action="store_true",
                    help="build the message-catalogue corpus (PO_PACKAGES) into --po-out instead")
    ap.add_argument("--po-out", default="data/corpus/debian-po.jsonl.gz")
    ap.add_argument("--help-docs", action="store_true",
                    help="build the manuals of HELP_SETS (read from their .deb files) into --help-out instead")
    ap.add_argument("--help-out", default="data/corpus/debian-help.jsonl.gz")
    ap.add_argument("--build", default="data/build", help="--po: where the .deb files are kept and unpacked")
    args = ap.parse_args()

    if args.help_docs:
        docs, sources = collect_help(args.build, args.min_chars)
        write_jsonl(docs, args.help_out)
        stats(docs, "manuals " + args.help_out)
        print("  file: %.2f MB gzip" % (os.path.getsize(args.help_out) / 1e6))
        print("\n| package | version | licence (DEP-5 short names) |\n|---|---|---|")
        for pkg, version, lic in sources:
            print("| %s | %s | %s |" % (pkg, version, lic))
        return
    if args.po:
        docs, sources = collect_po(args.build, args.min_chars)
        write_jsonl(docs, args.po_out)
        stats(docs, "message catalogues " + args.po_out)
        print("  file: %.2f MB gzip" % (os.path.getsize(args.po_out) / 1e6))
        print("\n| package | version | catalogues | messages | licence (DEP-5 short names) |\n|---|---|---:|---:|---|")
        for pkg, version, n_cat, n_msg, lic in sources:
            print("| %s | %s | %d | %d | %s |" % (pkg, version, n_cat, n_msg, lic))
        return

    if args.resplit:
        write_jsonl(read_jsonl(args.subset), args.subset)
        stats(read_jsonl(args.subset), "subset " + args.subset)
        return
    if args.subset_only:
        docs = read_jsonl(args.out)
    else:
        ensure_packages(args.no_install)
        docs = finalize(collect_html() + collect_man(args.jobs), args.min_chars)
        write_jsonl(docs, args.out)
        stats(docs, "full corpus " + args.out)
    sub = make_subset(docs, int(args.subset_mb * 1e6))
    write_jsonl(sub, args.subset)
    stats(sub, "subset " + args.subset)
    for name, ds in (("full", docs), ("subset", sub)):
        sp = {}
        for d in ds:
            s = split_of(d["id"])
            sp[s] = sp.get(s, 0) + 1
        print("  %s splits: %s" % (name, sp))
    print("  subset file: %.2f MB gzip" % (os.path.getsize(args.subset) / 1e6))


if __name__ == "__main__":
    main()
