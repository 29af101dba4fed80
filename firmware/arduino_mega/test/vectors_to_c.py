"""protocol_vectors.json -> a C header for test_core.c (generated into build/, never committed)."""

import json
import sys

ERRORS = {
    "cobs": "FRAME_COBS",
    "short": "FRAME_SHORT",
    "crc": "FRAME_CRC",
    "unknown_type": "FRAME_UNKNOWN_TYPE",
    "bad_length": "FRAME_BAD_LENGTH",
    "oversized": "FRAME_OVERSIZED",
}


def c_bytes(hex_string: str) -> str:
    return ", ".join(f"0x{b:02x}" for b in bytes.fromhex(hex_string))


def main(src: str, dst: str) -> None:
    vectors = json.load(open(src))
    lines = [
        "/* generated from protocol_vectors.json by test/vectors_to_c.py */",
        "typedef struct { const char *name; uint8_t wire[80]; uint8_t len; uint8_t seq;",
        "                 uint8_t type; } valid_vector_t;",
        "typedef struct { const char *name; uint8_t wire[80]; uint8_t len; uint8_t error;",
        "                 int seq; } corrupt_vector_t;",
        "static const valid_vector_t VALID[] = {",
    ]
    for v in vectors["valid"]:
        n = len(bytes.fromhex(v["hex"]))
        lines.append(f'  {{"{v["name"]}", {{{c_bytes(v["hex"])}}}, {n}, {v["seq"]}, {v["type"]}}},')
    lines += ["};", "static const corrupt_vector_t CORRUPT[] = {"]
    for v in vectors["corrupt"]:
        n = len(bytes.fromhex(v["hex"]))
        lines.append(
            f'  {{"{v["name"]}", {{{c_bytes(v["hex"])}}}, {n}, {ERRORS[v["error"]]}, '
            f"{v.get('seq', -1)}}},"
        )
    lines += ["};", ""]
    open(dst, "w").write("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
