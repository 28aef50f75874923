"""An independent acquirer (pyiso8583) for the soak runs: places holds and purchases before a
load, completes and reverses them after it, and reads balances, over the switch's ISO 8583
port (2-byte length framing, default dialect).

    python3 bench/soak_client.py PORT STATE.json before
    python3 bench/soak_client.py PORT STATE.json after-load
    python3 bench/soak_client.py PORT STATE.json after-restart

Exits 1 if any answer or balance is not what the ledger's rules say.
"""

import datetime
import json
import socket
import struct
import sys
import time

import iso8583
from iso8583.specs import default as spec

ACQUIRER = "123456"
TERMINAL = "SOAK0001"
# Demo accounts far from the load's (loadtest spreads over 1000 and up).
HOLD_CARDS = [11, 12]
PURCHASE_CARDS = [13, 14]
BALANCE = 1_000_000  # every demo account's opening balance, in minor units


def pan(index):
    body = "400000" + f"{index:09d}"
    digits = [int(d) for d in body]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


class Link:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)

    def call(self, fields):
        raw, _ = iso8583.encode(dict(fields), spec)
        started = time.monotonic()
        self.sock.sendall(struct.pack(">H", len(raw)) + bytes(raw))
        (length,) = struct.unpack(">H", self._read(2))
        answer = iso8583.decode(self._read(length), spec)[0]
        self.last_ms = (time.monotonic() - started) * 1000
        return answer

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise RuntimeError("connection closed")
            data += chunk
        return data


def message(mti, card, processing, amount, stan):
    f7 = datetime.datetime.now(datetime.timezone.utc).strftime("%m%d%H%M%S")
    return {
        "t": mti, "2": pan(card), "3": processing, "4": f"{amount:012d}", "7": f7,
        "11": f"{stan:06d}", "32": ACQUIRER, "37": f"SOAK{stan:06d}00", "41": TERMINAL,
        "49": "840",
    }


def referring(mti, original, amount, stan):
    m = message(mti, int(original["2"][6:15]), original["3"], amount, stan)
    m["90"] = original["t"] + original["11"] + original["7"] + ACQUIRER.rjust(11, "0") + "0" * 11
    return m


def available(link, card, stan):
    answer = link.call(message("0200", card, "310000", 0, stan))
    expect(answer.get("39") == "00", f"balance inquiry of card {card}: {answer.get('39')}")
    for at in range(0, len(answer["54"]), 20):
        block = answer["54"][at:at + 20]
        if block[2:4] == "02":
            value = int(block[8:20])
            return -value if block[7] == "D" else value
    raise RuntimeError("no available balance in field 54")


failures = []


def expect(condition, what):
    print(("ok      " if condition else "FAILED  ") + what)
    if not condition:
        failures.append(what)


def main():
    port, state_path, phase = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    link = Link(port)
    stan = {"before": 100, "after-load": 300, "after-restart": 500}[phase]

    def next_stan():
        nonlocal stan
        stan += 1
        return stan

    if phase == "before":
        state = {"holds": [], "purchases": []}
        for card in HOLD_CARDS:
            m = message("0100", card, "000000", 3_000, next_stan())
            a = link.call(m)
            expect(a.get("39") == "00", f"hold of 30.00 on card {card}: {a.get('39')}")
            state["holds"].append(m)
        for card in PURCHASE_CARDS:
            m = message("0200", card, "000000", 2_500, next_stan())
            a = link.call(m)
            expect(a.get("39") == "00", f"purchase of 25.00 on card {card}: {a.get('39')}")
            state["purchases"].append(m)
        json.dump(state, open(state_path, "w"))
    else:
        state = json.load(open(state_path))
        # The first hold and purchase after the load, the second ones after the restart.
        index = 0 if phase == "after-load" else 1
        hold, purchase = state["holds"][index], state["purchases"][index]
        hold_card, purchase_card = HOLD_CARDS[index], PURCHASE_CARDS[index]
        expect(available(link, hold_card, next_stan()) == BALANCE - 3_000,
               f"card {hold_card}: the hold still holds 30.00")
        a = link.call(referring("0220", hold, 2_000, next_stan()))
        expect(a.get("39") == "00", f"completion of 20.00 of the hold made before the load: {a.get('39')} "
               f"in {link.last_ms:.2f} ms")
        expect(available(link, hold_card, next_stan()) == BALANCE - 2_000,
               f"card {hold_card}: 20.00 captured, the rest released")
        a = link.call(referring("0400", purchase, 2_500, next_stan()))
        expect(a.get("39") == "00", f"reversal of the purchase made before the load: {a.get('39')} "
               f"in {link.last_ms:.2f} ms")
        expect(available(link, purchase_card, next_stan()) == BALANCE,
               f"card {purchase_card}: 25.00 back")
        a = link.call(referring("0400", purchase, 2_500, next_stan()))
        expect(a.get("39") == "00" and available(link, purchase_card, next_stan()) == BALANCE,
               "a second reversal returns nothing more")
        if phase == "after-restart":
            # What was done after the load survived the kill as well.
            expect(available(link, HOLD_CARDS[0], next_stan()) == BALANCE - 2_000,
                   f"card {HOLD_CARDS[0]}: its completion survived the kill")
            expect(available(link, PURCHASE_CARDS[0], next_stan()) == BALANCE,
                   f"card {PURCHASE_CARDS[0]}: its reversal survived the kill")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
