import pytest
import torch

from lit_loops.experiments.subleq import (
    PROGRAMS,
    MachineSpec,
    State,
    assemble,
    changed_mask,
    check_state,
    decode,
    encode,
    is_halted,
    loss_mask,
    program_inputs,
    programs_that_fit,
    random_states,
    run,
    step,
    written_mask,
)

# The small machine: tokens 0-3 scratchpad, 4-7 memory, 8-15 instructions, 4-bit integers.
SMALL = MachineSpec(n=16, s=4, m=4, N=4)
BIG = MachineSpec(n=32, s=4, m=8, N=8)


def make(mem, insts, pc, spec=SMALL):
    """A batch-of-1 state; instruction slots not given hold ``(4, 4, self)``."""
    slots = [(4, 4, spec.inst_start + i) for i in range(spec.num_instructions)]
    slots[: len(insts)] = insts
    return State(torch.tensor([mem]), torch.tensor([slots]), torch.tensor([pc]))


# --- MachineSpec --------------------------------------------------------------------------
def test_spec_sizes_and_fields():
    assert (SMALL.log_n, SMALL.num_instructions, SMALL.d, SMALL.inst_start) == (4, 8, 33, 8)
    assert (SMALL.value_min, SMALL.value_max) == (-8, 7)
    f = SMALL.field_slices
    assert list(f) == ["position", "scratchpad", "memory", "instruction", "work", "pc"]
    assert [(x.start, x.stop) for x in f.values()] == [
        (0, 4), (4, 5), (5, 9), (9, 21), (21, 29), (29, 33),
    ]  # fmt: skip


@pytest.mark.parametrize("n, s, m, N", [(4, 1, 1, 2), (16, 4, 4, 4), (32, 4, 8, 8), (64, 2, 9, 5)])
def test_d_formula_and_fields_tile_the_row(n, s, m, N):
    spec = MachineSpec(n=n, s=s, m=m, N=N)
    log_n = {4: 2, 16: 4, 32: 5, 64: 6}[n]
    assert spec.log_n == log_n and spec.d == 5 * log_n + 3 * N + 1
    stops = [0] + [x.stop for x in spec.field_slices.values()]
    starts = [x.start for x in spec.field_slices.values()]
    assert starts == stops[:-1] and stops[-1] == spec.d


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n": 12}, "n=12"),
        ({"n": 2, "s": 1, "m": 1}, "n=2"),
        ({"n": 16.0}, "n=16.0"),
        ({"s": 0}, "s=0"),
        ({"m": 0}, "m=0"),
        ({"n": 8, "s": 4, "m": 4}, "m=4"),  # no instruction token left
        ({"N": 1}, "N=1"),
        ({"scale": 0.0}, "scale=0.0"),
        ({"scale": -1.0}, "scale=-1.0"),
        ({"scale": float("nan")}, "scale=nan"),
    ],
)
def test_bad_spec_values_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MachineSpec(**kwargs)


# --- step, by hand (mem tokens 4..7 hold mem[0..3]) ---------------------------------------
@pytest.mark.parametrize(
    "mem, inst, pc, mem_after, pc_after",
    [
        ([2, 5, 0, 0], (4, 5, 12), 8, [2, 3, 0, 0], 9),  # 5 - 2 = 3 > 0: next
        ([5, 5, 0, 0], (4, 5, 12), 8, [5, 0, 0, 0], 12),  # 5 - 5 = 0: branch
        ([6, 2, 0, 0], (4, 5, 12), 8, [6, -4, 0, 0], 12),  # 2 - 6 = -4: branch
        ([-1, 7, 0, 0], (4, 5, 12), 8, [-1, -8, 0, 0], 12),  # 7 + 1 = 8 wraps to -8: branch
        ([1, -8, 0, 0], (4, 5, 12), 8, [1, 7, 0, 0], 9),  # -8 - 1 = -9 wraps to 7: next
        ([0, 0, 3, 0], (6, 6, 10), 8, [0, 0, 0, 0], 10),  # a == b clears: branch
        ([0, 0, 0, 4], (5, 7, 14), 8, [0, 0, 0, 4], 9),  # subtract 0 from 4 > 0: next
    ],
)
def test_step_by_hand(mem, inst, pc, mem_after, pc_after):
    after = step(SMALL, make(mem, [inst], pc))
    assert after.mem[0].tolist() == mem_after
    assert after.pc.item() == pc_after


def test_step_pc_wraps_from_last_instruction_to_first():
    slots = [(4, 4, 8)] * 7 + [(4, 5, 12)]  # the last slot (token 15) does 5 - 2
    after = step(SMALL, make([2, 5, 0, 0], slots, 15))
    assert after.pc.item() == 8 and after.mem[0].tolist() == [2, 3, 0, 0]
    # ... and a branch from the last slot goes to c
    after = step(SMALL, make([5, 5, 0, 0], slots, 15))
    assert after.pc.item() == 12 and after.mem[0].tolist() == [5, 0, 0, 0]


def test_step_executes_the_instruction_the_pc_points_at():
    slots = [(4, 4, 8), (4, 4, 8), (7, 6, 15)]  # slot 2 (token 10): mem[6] -= mem[7]
    after = step(SMALL, make([1, 1, 3, 1], slots, 10))
    assert after.mem[0].tolist() == [1, 1, 2, 1] and after.pc.item() == 11
    assert torch.equal(after.inst, make([1, 1, 3, 1], slots, 10).inst)  # code unchanged


def test_step_is_vectorised_over_the_batch():
    states = random_states(SMALL, 64, torch.Generator().manual_seed(0))
    batched = step(SMALL, states)
    singles = State.cat([step(SMALL, states[i]) for i in range(64)])
    assert batched.equal(singles).all()


def test_step_rejects_invalid_states():
    with pytest.raises(ValueError, match="state.mem"):
        step(SMALL, make([8, 0, 0, 0], [(4, 5, 8)], 8))  # 8 does not fit 4 bits
    with pytest.raises(ValueError, match="state.pc"):
        step(SMALL, make([0, 0, 0, 0], [(4, 5, 8)], 3))  # the PC on a scratchpad token
    with pytest.raises(ValueError, match="state.inst a"):
        step(SMALL, make([0, 0, 0, 0], [(9, 5, 8)], 8))  # a on an instruction token
    with pytest.raises(ValueError, match="state.inst c"):
        check_state(SMALL, make([0, 0, 0, 0], [(4, 5, 7)], 8))  # c on a memory token


# --- halting and run ------------------------------------------------------------------------
def test_halt_idiom_is_a_fixed_point():
    halt = make([0, 2, 0, 0], [(4, 4, 8)], 8)  # subleq Z Z here, Z = token 4 = 0
    assert is_halted(SMALL, halt).tolist() == [True]
    assert step(SMALL, halt).equal(halt).all()
    trace = run(SMALL, halt, max_steps=10)
    assert len(trace.states) == 1 and trace.steps.tolist() == [0] and trace.halted.all()


def test_halt_with_a_nonzero_word_clears_it_first():
    s = make([3, 0, 0, 0], [(4, 4, 8)], 8)
    assert is_halted(SMALL, s).tolist() == [False]
    trace = run(SMALL, s, max_steps=10)
    assert trace.steps.tolist() == [1] and len(trace.states) == 2
    assert trace.final.mem[0].tolist() == [0, 0, 0, 0] and trace.halted.all()


# slot 0: subleq 6 5 10: mem[5] -= mem[6] = 1, if <= 0 goto 10; slot 1: subleq Z Z 8 (jump
# back, Z = token 4 = 0); slot 2 (token 10): subleq Z Z here, the halt.
LOOP = [(6, 5, 10), (4, 4, 8), (4, 4, 10)] + [(4, 4, 11 + i) for i in range(5)]


def test_run_stops_each_element_at_its_fixed_point():
    halted_now = make([0, 0, 0, 0], [(4, 4, 8)], 8)
    counting = make([0, 3, 1, 0], LOOP, 8)
    trace = run(SMALL, State.cat([halted_now, counting]), max_steps=50)
    assert trace.halted.tolist() == [True, True] and trace.steps.tolist() == [0, 5]
    assert len(trace.states) == 6
    assert all(x[0].equal(halted_now).all() for x in trace.states)  # it kept its state
    assert trace.final.mem[1].tolist() == [0, 0, 1, 0] and trace.final.pc[1].item() == 10


def test_run_loops_and_respects_max_steps():
    s = make([0, 3, 1, 0], LOOP, 8)
    trace = run(SMALL, s, max_steps=100)
    # 3 -> 2 (jump back) -> 1 (jump back) -> 0: branch to 10, which is a fixed point
    assert [x.pc.item() for x in trace.states] == [8, 9, 8, 9, 8, 10]
    assert [x.mem[0, 1].item() for x in trace.states] == [3, 2, 2, 1, 1, 0]
    assert trace.steps.tolist() == [5] and trace.halted.all()
    short = run(SMALL, s, max_steps=3)
    assert short.steps.tolist() == [3] and len(short.states) == 4 and not short.halted.any()
    assert short.final.equal(trace.states[3]).all()


# --- random states ---------------------------------------------------------------------------
def test_random_states_ranges_and_coverage():
    x = random_states(SMALL, 2000, torch.Generator().manual_seed(1))
    check_state(SMALL, x)
    assert set(x.mem.unique().tolist()) == set(range(-8, 8))
    assert set(x.inst[..., :2].unique().tolist()) == {4, 5, 6, 7}
    assert set(x.inst[..., 2].unique().tolist()) == set(range(8, 16))
    assert set(x.pc.unique().tolist()) == set(range(8, 16))


def _boundary_gap(spec, x):
    rows = torch.arange(x.batch_size)
    a, b, _ = x.inst[rows, x.pc - spec.inst_start].unbind(-1)
    return spec.wrap(x.mem[rows, b - spec.s] - x.mem[rows, a - spec.s])


def test_branch_boundary_fraction():
    g = torch.Generator().manual_seed(2)
    x = random_states(SMALL, 1000, g, branch_boundary_fraction=1.0)
    check_state(SMALL, x)
    gap = _boundary_gap(SMALL, x)
    assert set(gap.tolist()) == {-1, 0, 1}
    # by chance (fraction 0): a == b in 1/4, else |gap| <= 1 in 3/16: 1/4 + 3/4 * 3/16 = 0.39
    none = _boundary_gap(SMALL, random_states(SMALL, 4000, g))
    assert 0.34 < (none.abs() <= 1).float().mean().item() < 0.44
    half = _boundary_gap(SMALL, random_states(SMALL, 4000, g, branch_boundary_fraction=0.5))
    assert 0.65 < (half.abs() <= 1).float().mean().item() < 0.75  # 1/2 + 1/2 * 0.39


def test_random_states_are_determined_by_the_generator():
    def draw(seed):
        return random_states(SMALL, 32, torch.Generator().manual_seed(seed), 0.5)

    assert draw(3).equal(draw(3)).all()
    assert not draw(3).equal(draw(4)).all()
    with pytest.raises(ValueError, match="branch_boundary_fraction=1.5"):
        random_states(SMALL, 4, branch_boundary_fraction=1.5)


# --- the encoding ------------------------------------------------------------------------------
def bits(text, scale=1.0):
    return torch.tensor([scale if c == "1" else -scale for c in text.replace(" ", "")])


ZEROS_INST, ZEROS_WORK = "0000 0000 0000", "0000 0000"


def test_encode_by_hand():
    spec = MachineSpec(n=16, s=4, m=4, N=4, scale=0.5)
    # mem tokens 4..7 = [-3, 5, 0, -8]; slot 0 (token 8) = (5, 6, 12); PC = 9
    state = make([-3, 5, 0, -8], [(5, 6, 12), (7, 4, 15)], 9, spec)
    x = encode(spec, state)[0]
    assert x.shape == (16, 33) and x.dtype == torch.float32
    #          position  scratch  memory  instruction  work        pc
    expected = {
        0: f"0000 1 0000 {ZEROS_INST} {ZEROS_WORK} 1001",  # scratchpad token 0 holds PC = 9
        3: f"0011 1 0000 {ZEROS_INST} {ZEROS_WORK} 0000",
        4: f"0100 0 1101 {ZEROS_INST} {ZEROS_WORK} 0000",  # -3
        5: f"0101 0 0101 {ZEROS_INST} {ZEROS_WORK} 0000",  # 5
        6: f"0110 0 0000 {ZEROS_INST} {ZEROS_WORK} 0000",  # 0
        7: f"0111 0 1000 {ZEROS_INST} {ZEROS_WORK} 0000",  # -8
        8: f"1000 0 0000 0101 0110 1100 {ZEROS_WORK} 0000",  # (5, 6, 12)
        9: f"1001 0 0000 0111 0100 1111 {ZEROS_WORK} 0000",  # (7, 4, 15)
    }
    for token, row in expected.items():
        assert torch.equal(x[token], bits(row, 0.5)), token


def test_decode_inverts_encode():
    for spec, seed in [(SMALL, 0), (BIG, 1), (MachineSpec(n=8, s=1, m=3, N=3, scale=2.5), 2)]:
        x = random_states(spec, 256, torch.Generator().manual_seed(seed), 0.3)
        enc = encode(spec, x)
        assert decode(spec, enc).equal(x).all()
        # only the signs matter
        noisy = enc * torch.rand(enc.shape, generator=torch.Generator().manual_seed(seed))
        assert decode(spec, noisy + 1e-3 * enc.sign()).equal(x).all()


def test_encoding_values_work_area_and_pc():
    spec = MachineSpec(n=16, s=4, m=4, N=4, scale=0.75)
    x = encode(spec, random_states(spec, 64, torch.Generator().manual_seed(5)))
    f = spec.field_slices
    assert ((x == 0.75) | (x == -0.75)).all()
    assert (x[:, :, f["work"]] == -0.75).all()
    assert (x[:, 1:, f["pc"]] == -0.75).all()  # the PC lives on token 0 only
    assert (x[:, :, f["scratchpad"]].squeeze(-1) > 0).eq(torch.arange(16) < 4).all()
    assert (x[:, :4, f["memory"]] == -0.75).all() and (x[:, 8:, f["memory"]] == -0.75).all()
    assert (x[:, :8, f["instruction"]] == -0.75).all()


def test_decode_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="x.shape"):
        decode(SMALL, torch.zeros(16, 33))


# --- masks -------------------------------------------------------------------------------------
def test_loss_mask_is_false_exactly_on_the_work_area():
    mask = loss_mask(SMALL)
    assert mask.shape == (16, 33)
    assert (~mask).nonzero()[:, 1].unique().tolist() == list(range(21, 29))
    assert (~mask).sum().item() == 16 * 8


def test_changed_and_written_masks():
    before = make([2, 5, 0, 0], [(4, 5, 12)], 8)  # mem[5]: 5 -> 3, PC: 8 -> 9
    after = step(SMALL, before)
    mask = changed_mask(SMALL, before, after)[0]
    expected = torch.zeros(16, 33, dtype=torch.bool)
    expected[5, 5:9] = True  # token b's value bits
    expected[0, 29:33] = True  # token 0's PC bits
    assert torch.equal(mask, expected)
    assert torch.equal(written_mask(SMALL, before)[0], expected)
    # a halted step changes nothing, but still writes b and the PC
    halt = make([0, 0, 0, 0], [(4, 4, 8)], 8)
    assert not changed_mask(SMALL, halt, step(SMALL, halt)).any()
    written = written_mask(SMALL, halt)[0]
    assert written[4, 5:9].all() and written[0, 29:33].all() and written.sum() == 8


def test_changed_mask_matches_differing_bits_on_random_steps():
    x = random_states(SMALL, 128, torch.Generator().manual_seed(6))
    y = step(SMALL, x)
    differ = encode(SMALL, x) != encode(SMALL, y)
    mask = changed_mask(SMALL, x, y)
    assert not (differ & ~mask).any()  # every changed bit is marked
    assert (mask <= written_mask(SMALL, x)).all()  # and only written fields are


# --- the assembler -----------------------------------------------------------------------------
def test_assemble_add_by_hand():
    prog = assemble(SMALL, PROGRAMS["add"].source)
    assert prog.symbols == {"A": 4, "B": 5, "Z": 6}  # the zero word comes last
    assert prog.state.mem.tolist() == [[0, 0, 0, 0]] and prog.state.pc.tolist() == [8]
    assert prog.state.inst[0].tolist() == [
        [4, 6, 9],  # subleq A Z
        [6, 5, 10],  # subleq Z B
        [6, 6, 11],  # subleq Z Z
        [6, 6, 11],  # halt = subleq Z Z here
        [6, 6, 12], [6, 6, 13], [6, 6, 14], [6, 6, 15],  # unused slots halt
    ]  # fmt: skip


def test_assemble_labels_comments_and_syntax():
    text = """
    .word X 3       # a comment
    .word ONE 1
    loop: subleq ONE, X, done
          Z Z loop  # no mnemonic
    done:
          halt
    """
    prog = assemble(SMALL, text)
    assert prog.symbols == {"X": 4, "ONE": 5, "Z": 6}
    assert prog.labels == {"loop": 8, "done": 10}
    assert prog.state.inst[0, :3].tolist() == [[5, 4, 10], [6, 6, 8], [6, 6, 10]]
    trace = run(SMALL, prog.state, 20)
    assert trace.halted.all() and prog.read(trace.final, "X").tolist() == [0]


def test_assemble_next_wraps_and_halt_word():
    # 8 instructions fill every slot: the last one's next is the first
    text = ".word A 1\n.word B 0\nhalt B\n" + "subleq A B\n" * 7
    prog = assemble(SMALL, text)
    assert "Z" not in prog.symbols  # halt B needs no zero word
    assert prog.state.inst[0, 0].tolist() == [5, 5, 8]
    assert prog.state.inst[0, 6:].tolist() == [[4, 5, 15], [4, 5, 8]]  # 15's next is 8
    prog = assemble(SMALL, ".word A 1\nsubleq A A\n")  # no halt: slots after it halt on Z
    assert prog.symbols == {"A": 4, "Z": 5} and prog.state.inst[0, 0].tolist() == [4, 4, 9]
    assert prog.state.inst[0, 1].tolist() == [5, 5, 9]


@pytest.mark.parametrize(
    "text, match",
    [
        (".word BIG 8\nhalt", "BIG=8"),  # does not fit 4 bits
        (".word NEG -9\nhalt", "NEG=-9"),
        (".word a 0\n.word b 0\n.word c 0\n.word d 0\nhalt", "words="),  # 4 + Z > m
        ("subleq Z Z nowhere", "nowhere"),
        (".word A 0\nsubleq A Q", "Q"),
        ("halt\n" * 9, "instructions=9"),
        (".word A 0\nx: halt\nx: halt", "x"),
        (".word A 0\n.word A 1\nhalt", "A"),
        (".word Z 1\nhalt", "Z"),
        ("subleq Z", "line 1"),
        (".word A zero\nhalt", "zero"),
        (".word here 0\nhalt", "here"),
        (".word L 0\nL: halt", "L"),
    ],
)
def test_assembler_errors_name_the_culprit(text, match):
    with pytest.raises(ValueError, match=match):
        assemble(SMALL, text)


def test_initial_state_and_read():
    prog = assemble(SMALL, PROGRAMS["add"].source)
    s = prog.initial_state({"A": torch.tensor([1, -2, 7]), "B": 3})
    assert s.batch_size == 3 and s.mem.tolist() == [[1, 3, 0, 0], [-2, 3, 0, 0], [7, 3, 0, 0]]
    assert prog.read(run(SMALL, s, 10).final, "B").tolist() == [4, 1, -6]  # 7 + 3 wraps
    with pytest.raises(ValueError, match="word A"):
        prog.initial_state({"A": 8})
    with pytest.raises(ValueError, match="word=.Q."):
        prog.initial_state({"Q": 1})


# --- the program library ----------------------------------------------------------------------
SMALL_PROGRAMS = ["add", "subtract", "negate", "copy", "multiply", "countdown", "fibonacci"]


def test_which_programs_fit_the_small_machine():
    assert sorted(programs_that_fit(SMALL)) == sorted(SMALL_PROGRAMS)
    loop = PROGRAMS["fibonacci_loop"]
    assert (loop.min_m, loop.min_instructions) == (5, 9) and not loop.fits(SMALL)
    assert sorted(programs_that_fit(BIG)) == sorted(PROGRAMS)
    for name in SMALL_PROGRAMS:
        p = PROGRAMS[name]
        assert p.min_m <= 4 and p.min_instructions <= 8


@pytest.mark.parametrize("name", SMALL_PROGRAMS)
def test_small_programs_on_every_input(name):
    p = PROGRAMS[name]
    prog = p.assemble(SMALL)
    grid = program_inputs(p, SMALL.N)
    trace = run(SMALL, prog.initial_state(grid), p.max_steps(SMALL.N))
    assert trace.halted.all() and is_halted(SMALL, trace.final).all()
    for word, value in p.expected_tensors(grid, SMALL.N).items():
        assert torch.equal(prog.read(trace.final, word), value), word


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_programs_on_a_bigger_machine(name):
    p = PROGRAMS[name]
    prog = p.assemble(BIG)
    inputs = program_inputs(p, BIG.N, 64, torch.Generator().manual_seed(7))
    assert len(inputs[next(iter(inputs))]) == 64  # a sample: each has more than 64 inputs
    trace = run(BIG, prog.initial_state(inputs), p.max_steps(BIG.N))
    assert trace.halted.all()
    for word, value in p.expected_tensors(inputs, BIG.N).items():
        assert torch.equal(prog.read(trace.final, word), value), word


def test_program_inputs_every_input_up_to_max_inputs_then_a_seeded_sample():
    add = PROGRAMS["add"]  # A, B in [-8, 7] for N=4: 256 inputs
    assert add.num_inputs(SMALL.N) == 256 and PROGRAMS["countdown"].num_inputs(SMALL.N) == 16
    grid = program_inputs(add, SMALL.N)
    assert list(grid) == ["A", "B"] and len(grid["A"]) == 256
    assert len(set(zip(grid["A"].tolist(), grid["B"].tolist(), strict=True))) == 256
    for max_inputs in (256, 1000):  # enough room: every input, the generator untouched
        g = torch.Generator().manual_seed(3)
        got = program_inputs(add, SMALL.N, max_inputs, g)
        assert all(torch.equal(got[k], grid[k]) for k in grid)
        assert torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())
    got = program_inputs(add, SMALL.N, 10, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # one randint per word, in declaration order
    want = {k: torch.randint(-8, 8, (10,), generator=g) for k in ("A", "B")}
    assert all(torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(ValueError, match="max_inputs=0"):
        program_inputs(add, SMALL.N, 0)


def test_library_examples_by_hand():
    def result(name, word, **inputs):
        p = PROGRAMS[name]
        prog = p.assemble(SMALL)
        return prog.read(run(SMALL, prog.initial_state(inputs), 64).final, word).item()

    assert result("add", "B", A=2, B=3) == 5
    assert result("subtract", "B", A=2, B=3) == 1
    assert result("negate", "R", X=5) == -5
    assert result("copy", "R", X=-6, R=4) == -6
    assert result("multiply", "P", A=3, B=2) == 6
    assert result("multiply", "P", A=-2, B=3) == -6
    assert result("multiply", "P", A=5, B=0) == 0
    assert result("countdown", "K", X=6) == 6
    assert result("fibonacci", "A") == 3 and result("fibonacci", "B") == 5  # 0 1 1 2 3 5
