#!/usr/bin/env python3
"""Generates SIPp injection files of address books and the matching bindings to preload.

  python3 examples/sipp/make_lists.py --entries 100 --lines 1000 --bound-every 5 --out DIR

writes DIR/lists<entries>.csv (SIPp injection file: one address book per line, one number
per field, `SEQUENTIAL`) and DIR/bindings<entries>.csv (`number,sip_uri`, for
`smart-presence bindings import`): every --bound-every-th number is a user (5 = 20%).
Numbers are French mobiles +336 1LLLL EEE (line L, entry E), so every line is a distinct
address book and the numbers are valid E.164.
"""
import argparse
import os


def number(line, entry):
    return f"+3361{line:04d}{entry:03d}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--bound-every", type=int, default=5)
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    assert a.entries <= 1000 and a.lines <= 10000, "the numbering scheme holds 10000 x 1000"
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"lists{a.entries}.csv"), "w") as f:
        f.write("SEQUENTIAL\n")
        for line in range(a.lines):
            f.write(";".join(number(line, e) for e in range(a.entries)) + "\n")
    with open(os.path.join(a.out, f"bindings{a.entries}.csv"), "w") as f:
        for line in range(a.lines):
            for e in range(0, a.entries, a.bound_every):
                f.write(f"{number(line, e)},sip:u{line}x{e}@example.org\n")


if __name__ == "__main__":
    main()
