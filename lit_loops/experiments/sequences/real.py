"""Real integer sequences: a benchmark of OEIS entries, as a user would try the model.

``IN_FAMILY``: well-known sequences that some family generates (naturals, evens, multiples,
Fibonacci, Lucas, Pell, powers, periodic and alternating patterns, figurate numbers, repeated
integers, blocks of 1 and 2, Fibonacci modulo m, ...), each with the family that covers it;
a test checks that the family's table holds its first terms (``family_bank``) and that none
of them is held out (``heldout.py``). ``OUT_OF_FAMILY``: sequences no family generates
(primes, cubes, Catalan, Collatz step counts, ...), a test checks that no family's table
holds them. The terms are
the first ones OEIS lists (from its offset), as long as they stay in 0..255, at most 16.

Every sequence is scored at every prefix of ``PREFIXES`` (5..8 terms) that it has a next
term for (``evaluate.py``: ``RealSequencesEval``, ``scripts/sequences_eval.py``).

Prefixes no predictor can get all of: A000045 (Fibonacci) and A003893 (Fibonacci mod 10)
share their first 7 terms (0, 1, 1, 2, 3, 5, 8: 13 or 3 next), and Fibonacci and A004396
their first 5 (0, 1, 1, 2, 3: 5 or 3); the training distribution answers Fibonacci's.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIXES = (5, 6, 7, 8)


@dataclass(frozen=True)
class RealSequence:
    """An OEIS entry: ``anumber`` (e.g. ``A000045``), a short ``name``, its first ``terms``
    in 0..255, and the ``family`` that generates them (None: out of family)."""

    anumber: str
    name: str
    terms: tuple[int, ...]
    family: str | None = None


def _seq(anumber: str, name: str, terms, family: str | None = None) -> RealSequence:
    return RealSequence(anumber, name, tuple(terms), family)


IN_FAMILY: tuple[RealSequence, ...] = (
    _seq("A000004", "zeros", [0] * 12, "constant"),
    _seq("A000012", "ones", [1] * 12, "constant"),
    _seq("A007395", "twos", [2] * 12, "constant"),
    _seq("A010701", "threes", [3] * 12, "constant"),
    _seq("A001477", "nonnegative integers", range(0, 16), "arithmetic_up"),
    _seq("A000027", "positive integers", range(1, 17), "arithmetic_up"),
    _seq("A005843", "even numbers 2n", range(0, 32, 2), "arithmetic_up"),
    _seq("A005408", "odd numbers 2n+1", range(1, 33, 2), "arithmetic_up"),
    _seq("A008585", "multiples of 3", range(0, 48, 3), "arithmetic_up"),
    _seq("A008586", "multiples of 4", range(0, 64, 4), "arithmetic_up"),
    _seq("A008587", "multiples of 5", range(0, 80, 5), "arithmetic_up"),
    _seq("A008588", "multiples of 6", range(0, 96, 6), "arithmetic_up"),
    _seq("A008589", "multiples of 7", range(0, 112, 7), "arithmetic_up"),
    _seq("A008590", "multiples of 8", range(0, 128, 8), "arithmetic_up"),
    _seq("A008591", "multiples of 9", range(0, 144, 9), "arithmetic_up"),
    _seq("A008592", "multiples of 10", range(0, 160, 10), "arithmetic_up"),
    _seq("A016777", "3n+1", range(1, 48, 3), "arithmetic_up"),
    _seq("A016789", "3n+2", range(2, 48, 3), "arithmetic_up"),
    _seq("A016813", "4n+1", range(1, 64, 4), "arithmetic_up"),
    _seq("A004767", "4n+3", range(3, 64, 4), "arithmetic_up"),
    _seq("A000035", "period 2: 0, 1", [0, 1] * 8, "alternating"),
    _seq("A059841", "period 2: 1, 0", [1, 0] * 8, "alternating"),
    _seq("A000034", "period 2: 1, 2", [1, 2] * 8, "alternating"),
    _seq("A010684", "period 2: 1, 3", [1, 3] * 8, "alternating"),
    _seq("A000045", "Fibonacci", [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233],
         "fibonacci_like"),
    _seq("A000032", "Lucas", [2, 1, 3, 4, 7, 11, 18, 29, 47, 76, 123, 199], "fibonacci_like"),
    _seq("A000129", "Pell", [0, 1, 2, 5, 12, 29, 70, 169], "fibonacci_like"),
    _seq("A001045", "Jacobsthal", [0, 1, 1, 3, 5, 11, 21, 43, 85, 171], "fibonacci_like"),
    _seq("A000079", "powers of 2", [1, 2, 4, 8, 16, 32, 64, 128], "geometric"),
    _seq("A000244", "powers of 3", [1, 3, 9, 27, 81, 243], "geometric"),
    _seq("A007283", "3 * 2^n", [3, 6, 12, 24, 48, 96, 192], "geometric"),
    _seq("A016116", "2^floor(n/2)", [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128],
         "alternating_factors"),
    _seq("A000217", "triangular numbers", [0, 1, 3, 6, 10, 15, 21, 28, 36, 45, 55, 66, 78, 91,
                                           105, 120], "growing_steps"),
    _seq("A000124", "lazy caterer n(n+1)/2+1", [1, 2, 4, 7, 11, 16, 22, 29, 37, 46, 56, 67, 79,
                                                92, 106, 121], "growing_steps"),
    _seq("A000290", "squares", [0, 1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121, 144, 169, 196,
                                225], "growing_steps"),
    _seq("A000326", "pentagonal numbers", [0, 1, 5, 12, 22, 35, 51, 70, 92, 117, 145, 176, 210,
                                           247], "growing_steps"),
    _seq("A000384", "hexagonal numbers", [0, 1, 6, 15, 28, 45, 66, 91, 120, 153, 190, 231],
         "growing_steps"),
    _seq("A002378", "oblong numbers n(n+1)", [0, 2, 6, 12, 20, 30, 42, 56, 72, 90, 110, 132,
                                              156, 182, 210, 240], "growing_steps"),
    _seq("A000096", "n(n+3)/2", [0, 2, 5, 9, 14, 20, 27, 35, 44, 54, 65, 77, 90, 104, 119, 135],
         "growing_steps"),
    _seq("A001844", "centered squares", [1, 5, 13, 25, 41, 61, 85, 113, 145, 181, 221],
         "growing_steps"),
    _seq("A004526", "floor(n/2)", [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7], "two_step"),
    _seq("A008619", "floor(n/2)+1", [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8],
         "two_step"),
    _seq("A002264", "floor(n/3)", [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5],
         "three_step"),
    _seq("A004523", "floor(2n/3): blocks 2, 1", [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8, 8, 9, 10],
         "mixed_periods"),
    _seq("A004396", "one even, two odd: blocks 1, 2", [0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 7, 7, 8, 9,
                                                      9, 10], "mixed_periods"),
    _seq("A032766", "0 or 1 mod 3 (+1, +2)", [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19,
                                              21, 22], "alternating_steps"),
    _seq("A001651", "not divisible by 3 (+1, +2)", [1, 2, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17,
                                                    19, 20, 22, 23], "alternating_steps"),
    _seq("A011655", "Fibonacci mod 2", [0, 1, 1] * 5, "fibonacci_mod"),
    _seq("A082115", "Fibonacci mod 3", [0, 1, 1, 2, 0, 2, 2, 1] * 2, "fibonacci_mod"),
    _seq("A003893", "Fibonacci mod 10", [0, 1, 1, 2, 3, 5, 8, 3, 1, 4, 5, 9, 4, 3, 7, 0],
         "fibonacci_mod"),
    _seq("A002379", "floor((3/2)^n)", [1, 1, 2, 3, 5, 7, 11, 17, 25, 38, 57, 86, 129, 194],
         "floor_geometric"),
)  # fmt: skip

OUT_OF_FAMILY: tuple[RealSequence, ...] = (
    _seq("A000040", "primes", [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53]),
    _seq("A000578", "cubes", [0, 1, 8, 27, 64, 125, 216]),
    _seq("A000292", "tetrahedral numbers", [0, 1, 4, 10, 20, 35, 56, 84, 120, 165, 220]),
    _seq("A000142", "factorials", [1, 1, 2, 6, 24, 120]),
    _seq("A000108", "Catalan numbers", [1, 1, 2, 5, 14, 42, 132]),
    _seq("A000110", "Bell numbers", [1, 1, 2, 5, 15, 52, 203]),
    _seq("A000041", "partition numbers", [1, 1, 2, 3, 5, 7, 11, 15, 22, 30, 42, 56, 77, 101,
                                          135, 176]),
    _seq("A000073", "tribonacci", [0, 0, 1, 1, 2, 4, 7, 13, 24, 44, 81, 149]),
    _seq("A000931", "Padovan", [1, 0, 0, 1, 0, 1, 1, 1, 2, 2, 3, 4, 5, 7, 9, 12]),
    _seq("A001006", "Motzkin numbers", [1, 1, 2, 4, 9, 21, 51, 127]),
    _seq("A000225", "2^n - 1", [0, 1, 3, 7, 15, 31, 63, 127, 255]),
    _seq("A000051", "2^n + 1", [2, 3, 5, 9, 17, 33, 65, 129]),
    _seq("A002620", "quarter-squares floor(n^2/4)", [0, 0, 1, 2, 4, 6, 9, 12, 16, 20, 25, 30,
                                                     36, 42, 49, 56]),
    _seq("A006577", "Collatz steps of n", [0, 1, 7, 2, 5, 8, 16, 3, 19, 6, 14, 9, 9, 17, 17, 4]),
    _seq("A001223", "prime gaps", [1, 2, 2, 4, 2, 4, 2, 4, 6, 2, 6, 4, 2, 4, 6, 6]),
    _seq("A005117", "squarefree numbers", [1, 2, 3, 5, 6, 7, 10, 11, 13, 14, 15, 17, 19, 21,
                                           22, 23]),
    _seq("A000005", "number of divisors", [1, 2, 2, 3, 2, 4, 2, 4, 3, 4, 2, 6, 2, 4, 4, 5]),
    _seq("A000010", "Euler phi", [1, 1, 2, 2, 4, 2, 6, 4, 6, 4, 10, 4, 12, 6, 8, 8]),
    _seq("A000796", "digits of pi", [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3]),
    _seq("A000120", "binary weight of n", [0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4]),
)  # fmt: skip
