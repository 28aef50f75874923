#!/usr/bin/env python3
"""An acquirer built on pyiso8583 (an independent ISO 8583 implementation, PyPI, MIT), run
against the real switch over TCP with the `default` spec and a 2-byte length header.

Walks the demo scenario of the Foundation issue and exits non-zero on the first mismatch.
Usage: acquirer.py --port PORT [--host 127.0.0.1]
"""
import argparse
import datetime
import random
import socket
import struct
import sys

import iso8583
from iso8583.specs import default as SPEC

ACQUIRER = "123456"
TERMINAL = "TERM0001"
CARD_100 = "4000000000000002"     # index 0: 100.00
CARD_BLOCKED = "4000000000000028"  # index 2: blocked (62)


def demo_pan(index):
    """The demo PAN of `index`: BIN 400000, 9-digit index, Luhn check digit."""
    body = f"400000{index:09d}"
    total = 0
    for i, digit in enumerate(reversed(body)):
        d = int(digit)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


class Link:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buffer = b""

    def send(self, doc):
        raw, _ = iso8583.encode(dict(doc), SPEC)
        self.sock.sendall(struct.pack(">H", len(raw)) + bytes(raw))

    def send_raw(self, body):
        self.sock.sendall(struct.pack(">H", len(body)) + body)

    def receive(self):
        while True:
            if len(self.buffer) >= 2:
                (length,) = struct.unpack(">H", self.buffer[:2])
                if len(self.buffer) >= 2 + length:
                    body, self.buffer = self.buffer[2:2 + length], self.buffer[2 + length:]
                    decoded, _ = iso8583.decode(body, SPEC)
                    return decoded
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("switch closed the connection")
            self.buffer += chunk

    def call(self, doc):
        self.send(doc)
        return self.receive()


class Scenario:
    def __init__(self, link, host, port):
        self.link = link
        self.host, self.port = host, port
        self.stan = random.randint(1, 400000)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.f7 = now.strftime("%m%d%H%M%S")
        self.checks = 0

    def next_stan(self):
        self.stan += 1
        return f"{self.stan:06d}"

    def request(self, mti, pan, amount_minor, processing="000000", **extra):
        doc = {
            "t": mti, "2": pan, "3": processing, "4": f"{amount_minor:012d}", "7": self.f7,
            "11": self.next_stan(), "12": self.f7[4:], "13": self.f7[:4], "14": "3012",
            "32": ACQUIRER, "37": f"{self.stan:012d}", "41": TERMINAL, "42": "MERCHANT0000001",
            "49": "840",
        }
        doc.update(extra)
        return doc

    def expect(self, what, response, **fields):
        for field, value in fields.items():
            key = field.lstrip("f")
            got = response.get(key)
            if value is ... and got is None or value is not ... and got != value:
                raise AssertionError(f"{what}: field {key} is {got!r}, expected {value!r}")
        self.checks += 1
        print(f"ok {self.checks} - {what}")

    def balances(self, pan):
        """(ledger, available) from field 54 of a balance inquiry."""
        response = self.link.call(self.request("0200", pan, 0, processing="310000"))
        self.expect(f"balance inquiry of {pan[:6]}...{pan[-4:]}", response, t="0210", f39="00", f54=...)
        blocks = [response["54"][i:i + 20] for i in range(0, len(response["54"]), 20)]
        by_type = {b[2:4]: (-1 if b[7] == "D" else 1) * int(b[8:]) for b in blocks}
        return by_type["01"], by_type["02"]

    def available(self, pan):
        return self.balances(pan)[1]

    def names(self, original):
        """Field 90 naming `original`."""
        return original["t"] + original["11"] + original["7"] + ACQUIRER.rjust(11, "0") + "0" * 11

    def referring(self, mti, original, amount_minor, **extra):
        return self.request(mti, original["2"], amount_minor, processing=original["3"],
                            **{"90": self.names(original)}, **extra)

    def step(self, what, pan, doc, t, f39, before, after):
        """Sends `doc`, expects (t, f39), and the card's (ledger, available) to go from `before`
        to `after`; prints both."""
        got_before = self.balances(pan)
        if got_before != before:
            raise AssertionError(f"{what}: balances before are {got_before}, expected {before}")
        response = self.link.call(doc)
        got_after = self.balances(pan)
        self.expect(f"{what}: {doc['t']} -> {response.get('t')} {response.get('39')}, "
                    f"(ledger, available) {got_before} -> {got_after}", response, t=t, f39=f39)
        if got_after != after:
            raise AssertionError(f"{what}: balances after are {got_after}, expected {after}")

    def money(self, host, port):
        """The rows of the money-semantics issue, with balances before and after each step."""
        full = (1000000, 1000000)
        pan = demo_pan(201)
        hold = self.request("0100", pan, 10000)
        self.step("hold 100.00", pan, hold, "0110", "00", full, (1000000, 990000))
        self.step("completion 30.00", pan, self.referring("0220", hold, 3000), "0230", "00",
                  (1000000, 990000), (997000, 997000))
        self.step("second completion 50.00 (new STAN, same field 90)", pan,
                  self.referring("0220", hold, 5000), "0230", "00", (997000, 997000), (992000, 992000))
        self.step("third completion beyond the 20.00 left", pan,
                  self.referring("0220", hold, 2001), "0230", "13", (992000, 992000), (992000, 992000))

        pan = demo_pan(202)
        withdrawal = self.request("0200", pan, 10000, processing="010000")
        self.step("cash withdrawal 100.00", pan, withdrawal, "0210", "00", full, (990000, 990000))
        partial = self.referring("0420", withdrawal, 10000, **{"95": "000000007000000000007000C00000000C00000000"})
        self.step("0420 with field 95: 70.00 dispensed", pan, partial, "0430", "00",
                  (990000, 990000), (993000, 993000))

        pan = demo_pan(203)
        late = self.request("0200", pan, 10000)
        self.step("0420 before its original 0200", pan, self.referring("0420", late, 10000), "0430", "00",
                  full, full)
        self.step("the late original 0200 moves nothing", pan, late, "0210", "12", full, full)

        pan = demo_pan(204)
        hold = self.request("0100", pan, 10000)
        self.step("hold 100.00", pan, hold, "0110", "00", full, (1000000, 990000))
        completion = self.referring("0220", hold, 6000)
        self.step("completion 60.00", pan, completion, "0230", "00", (1000000, 990000), (994000, 994000))
        self.step("0420 naming the 0220 undoes the capture", pan, self.referring("0420", completion, 6000),
                  "0430", "00", (994000, 994000), full)

        # The link drops right after a 0100; the identical 0100 on a new link is answered.
        pan = demo_pan(205)
        # 20 rounds: the demo velocity rule answers 65 to a 21st approval within 60 s.
        for round in range(20):
            hold = self.request("0100", pan, 100)
            first = Link(host, port)
            first.send(hold)
            first.sock.close()
            second = Link(host, port)
            answer = second.call(hold)
            if answer.get("39") != "00" or "38" not in answer:
                raise AssertionError(f"retransmission round {round}: {answer}")
            if second.call(hold) != answer:
                raise AssertionError(f"retransmission round {round}: answered differently")
            second.sock.close()
        self.expect("20 retransmissions on a new link after a dropped one, each answered as its original",
                    {"ok": "1"}, ok="1")
        if self.balances(pan) != (1000000, 1000000 - 20 * 100):
            raise AssertionError(f"20 holds of 1.00 expected, balances {self.balances(pan)}")

    def run(self):
        link = self.link
        signon = {"t": "0800", "7": self.f7, "11": self.next_stan(), "70": "001"}
        self.expect("0800 sign-on", link.call(signon), t="0810", f39="00", f11=signon["11"], f70="001")

        start = self.available(CARD_100)
        if start != 10000:
            raise AssertionError(f"{CARD_100[:6]}...{CARD_100[-4:]} starts with {start}, expected 100.00 (10000)")
        first = self.request("0100", CARD_100, 3000)
        approved = link.call(first)
        self.expect("0100 of 30.00 approved with field 38", approved, t="0110", f39="00", f38=..., f11=first["11"])
        for field in ("2", "3", "4", "7", "11", "12", "13", "32", "37", "41", "42", "49"):
            self.expect(f"0110 echoes field {field}", approved, **{f"f{field}": first[field]})
        if self.available(CARD_100) != 7000:
            raise AssertionError("30.00 hold not reflected: 70.00 should be available")
        self.expect("70.00 available after the hold", {"ok": "1"}, ok="1")

        over = self.request("0100", CARD_100, 8000)
        self.expect("0100 beyond the available balance declined 51", link.call(over), t="0110", f39="51")

        orig90 = "0100" + first["11"] + first["7"] + ACQUIRER.rjust(11, "0") + "0" * 11
        reversal = self.request("0400", CARD_100, 3000, **{"90": orig90})
        self.expect("0400 reversing the hold approved", link.call(reversal), t="0410", f39="00")
        if self.available(CARD_100) != 10000:
            raise AssertionError("reversal did not restore 100.00 available")
        self.expect("available balance restored by the reversal", {"ok": "1"}, ok="1")

        again = link.call(first)
        if {k: v for k, v in again.items() if k not in ("p", "h")} != {k: v for k, v in approved.items() if k not in ("p", "h")}:
            raise AssertionError(f"retransmission answered differently: {again} vs {approved}")
        self.expect("retransmitted 0100 gets the original response", again, f39="00", f38=approved["38"])
        if self.available(CARD_100) != 10000:
            raise AssertionError("retransmission placed a new hold")
        self.expect("retransmission placed no new hold", {"ok": "1"}, ok="1")

        self.expect("blocked card declined 62", link.call(self.request("0100", CARD_BLOCKED, 100)), f39="62")
        self.expect("Luhn-invalid PAN declined 14", link.call(self.request("0100", "4000000000000003", 100)), f39="14")

        bad = self.request("0100", CARD_100, 100)
        bad["4"] = "0000000001X0"          # not numeric: a malformed field
        self.expect("malformed field answered 30", link.call(bad), t="0110", f39="30", f11=bad["11"])
        echo = {"t": "0800", "7": self.f7, "11": self.next_stan(), "70": "301"}
        self.expect("connection still usable after the malformed request", link.call(echo), t="0810", f39="00")

        # 1,000 requests written back to back, then all responses read and matched by field 11.
        pending = {}
        burst = b""
        for i in range(1000):
            # The holds on 500 cards: the demo velocity rule allows 20 a minute per card.
            doc = self.request("0200", "4000000000000101", 0, processing="310000") if i % 2 else \
                self.request("0100", demo_pan(1000 + i), 1)
            raw, _ = iso8583.encode(dict(doc), SPEC)
            burst += struct.pack(">H", len(raw)) + bytes(raw)
            pending[doc["11"]] = doc["t"]
        link.sock.sendall(burst)
        for _ in range(1000):
            response = link.receive()
            stan = response["11"]
            if stan not in pending:
                raise AssertionError(f"response for unknown or repeated STAN {stan}")
            if response["t"] != pending.pop(stan)[:2] + "10" or response["39"] != "00":
                raise AssertionError(f"unexpected response {response['t']} {response['39']} for STAN {stan}")
        self.expect("1,000 back-to-back requests all answered and matched by field 11", {"ok": "1"}, ok="1")

        self.money(self.host, self.port)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    scenario = Scenario(Link(args.host, args.port), args.host, args.port)
    try:
        scenario.run()
    except AssertionError as failure:
        print(f"not ok - {failure}")
        print(f"{scenario.checks} passed, 1 failed")
        return 1
    print(f"{scenario.checks} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
