#!/usr/bin/env python3
"""unzip_glob.py ARCHIVE PATTERN DEST: extract the members of ARCHIVE whose path matches the
fnmatch PATTERN into DEST, flattened (like `unzip -j`), keeping the executable bits.
Used by the setup scripts so that they do not need the `unzip` package."""
import fnmatch
import os
import shutil
import sys
import zipfile

archive, pattern, dest = sys.argv[1:4]
os.makedirs(dest, exist_ok=True)
count = 0
with zipfile.ZipFile(archive) as z:
    for info in z.infolist():
        if info.is_dir() or not fnmatch.fnmatchcase(info.filename, pattern):
            continue
        target = os.path.join(dest, os.path.basename(info.filename))
        with z.open(info) as src, open(target + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        mode = (info.external_attr >> 16) & 0o777
        os.chmod(target + ".part", mode or 0o644)
        os.replace(target + ".part", target)
        count += 1
if count == 0:
    sys.exit(f"unzip_glob: nothing in {archive} matches {pattern}")
