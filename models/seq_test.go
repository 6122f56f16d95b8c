package models

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// seqFile returns a random valid model of a sequence family with in inputs.
func seqFile(family string, in int, seed uint64) *File {
	rng := rand.New(rand.NewPCG(seed, 7))
	rnd := func(n int, scale float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * scale)
		}
		return v
	}
	f := &File{Name: "seq", Family: family, Version: 1, Output: OutputProbability,
		Thresholds: Thresholds{Review: 0.5, Alert: 0.9}}
	for i := range in {
		f.Inputs = append(f.Inputs, Input{Name: fmt.Sprintf("f%d", i), Mean: rng.NormFloat64(), Std: 0.5 + rng.Float64()})
	}
	var headIn int
	switch family {
	case FamilyCNN:
		c := &Conv{Window: 6, Kernel: 3, Channels: 5, Activation: "relu", Pool: PoolMax, PoolSize: 2, PoolStride: 2}
		if seed%2 == 1 {
			c.Activation, c.Pool, c.PoolSize, c.PoolStride = "tanh", PoolAvg, 4, 1
		}
		c.Weights, c.Bias = rnd(c.Kernel*in*c.Channels, 0.5), rnd(c.Channels, 0.2)
		f.Conv = c
		l := c.Window - c.Kernel + 1
		headIn = c.Channels * ((l-c.PoolSize)/c.PoolStride + 1)
	default:
		h := 4
		g := gates(family)
		f.Recurrent = &Recurrent{Cell: family, Hidden: h, Wx: rnd(in*g*h, 0.6), Wh: rnd(h*g*h, 0.6), Bx: rnd(g*h, 0.3), Bh: rnd(g*h, 0.3)}
		headIn = h
	}
	f.Layers = []Layer{
		{In: headIn, Out: 3, Activation: "tanh", Weights: rnd(headIn*3, 0.7), Bias: rnd(3, 0.2)},
		{In: 3, Out: 1, Activation: "sigmoid", Weights: rnd(3, 1), Bias: rnd(1, 0.2)},
	}
	return f
}

// TestScoreSeqMatchesReference streams interleaved entities through
// ScoreSeq in batches (an entity several times in one batch, re-delivered
// rows that must not advance the state) and compares every score with the
// float64 reference of the documented semantics.
func TestScoreSeqMatchesReference(t *testing.T) {
	for _, fam := range []string{FamilyCNN, FamilyGRU, FamilyLSTM} {
		for seed := uint64(1); seed <= 2; seed++ {
			t.Run(fmt.Sprintf("%s/%d", fam, seed), func(t *testing.T) {
				const in, entities, events = 5, 7, 400
				f := seqFile(fam, in, seed)
				m := mustParse(t, f)
				if !m.Sequential() {
					t.Fatal("not sequential")
				}
				names := []string{"extra"}
				for _, x := range f.Inputs {
					names = append(names, x.Name)
				}
				// The stream's row is wider than the model's inputs and in another order.
				names[0], names[in] = names[in], names[0]
				s, err := m.Bind(names)
				if err != nil {
					t.Fatal(err)
				}
				ref := mustRef(t, f)
				ss := m.StateSize()
				if ss != ref.StateLen() {
					t.Fatalf("StateSize %d, reference %d", ss, ref.StateLen())
				}
				states := make([][]float32, entities)
				refStates := make([][]float64, entities)
				for e := range states {
					states[e] = make([]float32, ss)
					refStates[e] = make([]float64, ss)
				}
				rng := rand.New(rand.NewPCG(seed, 99))
				var worst float64
				for done := 0; done < events; {
					rows := 1 + rng.IntN(24)
					x := make([]float32, rows*len(names))
					st := make([][]float32, rows)
					advance := make([]bool, rows)
					ents := make([]int, rows)
					for r := range rows {
						ents[r] = rng.IntN(entities)
						st[r] = states[ents[r]]
						advance[r] = rng.IntN(8) != 0
						for j := range names {
							x[r*len(names)+j] = float32(rng.NormFloat64() * 2)
						}
					}
					out := make([]float32, rows)
					s.ScoreSeq(x, rows, st, advance, out)
					for r := range rows {
						row := make([]float32, in)
						for i, c := range s.cols {
							row[i] = x[r*len(names)+c]
						}
						want, _, next := ref.Step(refStates[ents[r]], ref.Standardize(row))
						if advance[r] {
							refStates[ents[r]] = next
						}
						d := math.Abs(float64(out[r]) - want)
						worst = max(worst, d)
						if d > 2e-5 {
							t.Fatalf("event %d row %d entity %d: score %v, reference %v", done, r, ents[r], out[r], want)
						}
					}
					done += rows
				}
				for e := range states {
					for i := range states[e] {
						if d := math.Abs(float64(states[e][i]) - refStates[e][i]); d > 1e-4 {
							t.Fatalf("entity %d state[%d] %v, reference %v", e, i, states[e][i], refStates[e][i])
						}
					}
				}
				t.Logf("max |score − reference| %.2g over %d events", worst, events)
			})
		}
	}
}

// TestSeqReasons checks the integrated gradients of the sequence families
// against integrated gradients computed with finite differences of the
// float64 reference, and their completeness.
func TestSeqReasons(t *testing.T) {
	for _, fam := range []string{FamilyCNN, FamilyGRU, FamilyLSTM} {
		for seed := uint64(1); seed <= 2; seed++ {
			t.Run(fmt.Sprintf("%s/%d", fam, seed), func(t *testing.T) {
				const in = 5
				f := seqFile(fam, in, seed)
				m := mustParse(t, f)
				names := m.Inputs()
				s, _ := m.Bind(names)
				ref := mustRef(t, f)
				logit := func(hist, z []float64) float64 {
					_, l, _ := ref.Step(hist, z)
					return l
				}
				rng := rand.New(rand.NewPCG(seed, 5))
				state := make([]float32, m.StateSize())
				hist := make([]float64, m.StateSize())
				row := make([]float32, in)
				// Build a history of a few events, then explain the next one.
				for step := range 5 {
					for i := range row {
						row[i] = float32(rng.NormFloat64())
					}
					out := make([]float32, 1)
					s.ScoreSeq(row, 1, [][]float32{state}, nil, out)
					z := ref.Standardize(row)
					if step < 4 {
						_, _, hist = ref.Step(hist, z)
						continue
					}
					rs := s.Reasons(row, 0, in, nil)
					// Finite-difference integrated gradients (same midpoints).
					want := make([]float64, in)
					for st := range igSteps {
						a := (float64(st) + 0.5) / igSteps
						for i := range in {
							const eps = 1e-5
							zp, zm := make([]float64, in), make([]float64, in)
							for j := range in {
								zp[j], zm[j] = a*z[j], a*z[j]
							}
							zp[i] += eps
							zm[i] -= eps
							want[i] += (logit(hist, zp) - logit(hist, zm)) / (2 * eps) * z[i] / igSteps
						}
					}
					var sum float64
					for _, r := range rs {
						i := indexOf(names, r.Feature)
						sum += float64(r.Contribution)
						if d := math.Abs(float64(r.Contribution) - want[i]); d > 1e-4+1e-3*math.Abs(want[i]) {
							t.Errorf("%s: contribution %v, finite-difference IG %v", r.Feature, r.Contribution, want[i])
						}
					}
					full, base := logit(hist, z), logit(hist, make([]float64, in))
					if d := math.Abs(sum - (full - base)); d > 0.05*math.Abs(full-base)+1e-3 {
						t.Errorf("completeness: contributions sum to %v, logit difference %v", sum, full-base)
					}
				}
			})
		}
	}
}

func indexOf(v []string, s string) int {
	for i, x := range v {
		if x == s {
			return i
		}
	}
	return -1
}

// TestSeqFileErrors checks that malformed sequence models are refused with
// an error naming the problem.
func TestSeqFileErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(f *File)
		want string
	}{
		{"conv missing", func(f *File) { f.Conv = nil }, "conv: missing"},
		{"window < kernel", func(f *File) { f.Conv.Window = 2 }, "kernel 3 and window 2"},
		{"pool", func(f *File) { f.Conv.Pool = "sum" }, `pool "sum"`},
		{"pool size", func(f *File) { f.Conv.PoolSize = 9 }, "pool_size 9"},
		{"conv weights", func(f *File) { f.Conv.Weights = f.Conv.Weights[1:] }, "conv: weights"},
		{"conv nan", func(f *File) { f.Conv.Bias[0] = float32(math.NaN()) }, "conv: bias[0]"},
		{"head in", func(f *File) { f.Layers[0].In++ }, "conv channels×pooled positions"},
		{"conv on mlp", func(f *File) { f.Family = FamilyMLP }, "only family cnn"},
		{"recurrent on cnn", func(f *File) { f.Recurrent = &Recurrent{} }, "only families gru and lstm"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := seqFile(FamilyCNN, 4, 2)
			c.edit(f)
			_, err := f.Encode()
			if err == nil || !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want ErrInvalidModel naming %q", err, c.want)
			}
		})
	}
	rcases := []struct {
		name string
		edit func(f *File)
		want string
	}{
		{"cell", func(f *File) { f.Recurrent.Cell = FamilyLSTM }, `cell "lstm", family gru`},
		{"wh", func(f *File) { f.Recurrent.Wh = f.Recurrent.Wh[:3] }, "recurrent: wh: 3 values"},
		{"inf", func(f *File) { f.Recurrent.Wx[2] = float32(math.Inf(1)) }, "recurrent: wx[2]"},
		{"hidden", func(f *File) { f.Recurrent.Hidden = 0 }, "hidden 0"},
		{"head", func(f *File) { f.Layers[0].In = 5 }, "recurrent hidden (4)"},
		{"output", func(f *File) { f.Output = "class" }, `output "class"`},
		{"value output needs identity", func(f *File) { f.Output = OutputValue }, "wants \"identity\""},
	}
	for _, c := range rcases {
		t.Run(c.name, func(t *testing.T) {
			f := seqFile(FamilyGRU, 4, 3)
			c.edit(f)
			_, err := f.Encode()
			if err == nil || !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want ErrInvalidModel naming %q", err, c.want)
			}
		})
	}
}

// TestScoreOnSequentialPanics: Score cannot silently ignore the state.
func TestScoreOnSequentialPanics(t *testing.T) {
	m := mustParse(t, seqFile(FamilyGRU, 3, 1))
	s, _ := m.Bind(m.Inputs())
	defer func() {
		if recover() == nil {
			t.Fatal("Score on a GRU did not panic")
		}
	}()
	s.Score(make([]float32, 3), 1, make([]float32, 1))
}

// familyFile returns a model of each family at the sizes `streamscore
// train` uses by default, over in inputs: linear and logistic; MLP 32×16;
// CNN window 8, kernel 3, 16 channels, global max pool, head 16→1; GRU and
// LSTM hidden 16, head 16→1.
func familyFile(family string, in int) *File {
	rng := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int, scale float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * scale)
		}
		return v
	}
	switch family {
	case FamilyLinear, FamilyLogistic:
		return testFile(family, in, nil, 3)
	case FamilyMLP:
		return testFile(family, in, []int{32, 16}, 3)
	}
	f := &File{Name: "seq", Family: family, Version: 1, Output: OutputProbability, Thresholds: Thresholds{Review: 0.5, Alert: 0.9}}
	for i := range in {
		f.Inputs = append(f.Inputs, Input{Name: fmt.Sprintf("f%d", i), Mean: 0, Std: 1})
	}
	const h = 16
	if family == FamilyCNN {
		f.Conv = &Conv{Window: 8, Kernel: 3, Channels: h, Activation: "relu", Pool: PoolMax, PoolSize: 6, PoolStride: 1,
			Weights: rnd(3*in*h, 0.2), Bias: rnd(h, 0.1)}
	} else {
		g := gates(family)
		f.Recurrent = &Recurrent{Cell: family, Hidden: h, Wx: rnd(in*g*h, 0.2), Wh: rnd(h*g*h, 0.2), Bx: rnd(g*h, 0.1), Bh: rnd(g*h, 0.1)}
	}
	f.Layers = []Layer{{In: h, Out: 1, Activation: "sigmoid", Weights: rnd(h, 0.5), Bias: []float32{0}}}
	return f
}

// BenchmarkFamilies measures the scoring cost per event of every family at
// batch 1 (a synchronous score) and 256 (a full micro-batch), over 39
// inputs (the default feature spec), and the cost of one row's reasons.
// Sequence families step 256 distinct cards' states (no repeats).
func BenchmarkFamilies(b *testing.B) {
	const in = 39
	for _, fam := range []string{FamilyLinear, FamilyLogistic, FamilyMLP, FamilyCNN, FamilyGRU, FamilyLSTM} {
		m := mustParse(b, familyFile(fam, in))
		for _, rows := range []int{1, 256} {
			b.Run(fmt.Sprintf("family=%s/batch=%d", fam, rows), func(b *testing.B) {
				s, _ := m.Bind(m.Inputs())
				states := make([][]float32, rows)
				for r := range states {
					states[r] = make([]float32, m.StateSize())
				}
				x := make([]float32, rows*in)
				for i := range x {
					x[i] = float32(i%7) - 3
				}
				out := make([]float32, rows)
				s.ScoreSeq(x, rows, states, nil, out)
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					s.ScoreSeq(x, rows, states, nil, out)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/event")
			})
		}
		b.Run(fmt.Sprintf("family=%s/reasons", fam), func(b *testing.B) {
			s, _ := m.Bind(m.Inputs())
			x := make([]float32, in)
			for i := range x {
				x[i] = float32(i%5) - 2
			}
			st := [][]float32{make([]float32, m.StateSize())}
			out := make([]float32, 1)
			s.ScoreSeq(x, 1, st, nil, out)
			var rs []Reason
			for b.Loop() {
				rs = s.Reasons(x, 0, 3, rs[:0])
			}
		})
	}
}

// TestScoreSeqNoAlloc: once its buffers have grown, ScoreSeq (with entities
// repeated in the batch, so several waves) and Reasons do not allocate.
func TestScoreSeqNoAlloc(t *testing.T) {
	for _, fam := range []string{FamilyCNN, FamilyGRU, FamilyLSTM} {
		m := mustParse(t, familyFile(fam, 12))
		s, _ := m.Bind(m.Inputs())
		const rows = 64
		cards := make([][]float32, 9)
		for i := range cards {
			cards[i] = make([]float32, m.StateSize())
		}
		states := make([][]float32, rows)
		for r := range states {
			states[r] = cards[r%len(cards)]
		}
		x := make([]float32, rows*12)
		for i := range x {
			x[i] = float32(i%7) - 3
		}
		out := make([]float32, rows)
		var rs []Reason
		run := func() {
			s.ScoreSeq(x, rows, states, nil, out)
			rs = s.Reasons(x, 5, 3, rs[:0])
		}
		run()
		if n := testing.AllocsPerRun(20, run); n != 0 {
			t.Errorf("%s: %v allocations per ScoreSeq+Reasons, want 0", fam, n)
		}
	}
}
