package modelref

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
)

// file is the model file format, every field named so that an unknown one
// is refused; the raw fields do not enter the math.
type file struct {
	Format        json.RawMessage `json:"format"`
	FormatVersion json.RawMessage `json:"format_version"`
	Name          json.RawMessage `json:"name"`
	Family        string          `json:"family"`
	Version       json.RawMessage `json:"version"`
	Output        json.RawMessage `json:"output"`
	Inputs        []input         `json:"inputs"`
	Conv          *conv           `json:"conv"`
	Recurrent     *recurrent      `json:"recurrent"`
	Layers        []layer         `json:"layers"`
	Thresholds    json.RawMessage `json:"thresholds"`
	Training      json.RawMessage `json:"training"`
	Digest        json.RawMessage `json:"digest"`
}

type input struct {
	Name string  `json:"name"`
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
}

type layer struct {
	In         int       `json:"in"`
	Out        int       `json:"out"`
	Activation string    `json:"activation"`
	Weights    []float32 `json:"weights"`
	Bias       []float32 `json:"bias"`
}

type conv struct {
	Window     int       `json:"window"`
	Kernel     int       `json:"kernel"`
	Channels   int       `json:"channels"`
	Activation string    `json:"activation"`
	Weights    []float32 `json:"weights"`
	Bias       []float32 `json:"bias"`
	Pool       string    `json:"pool"`
	PoolSize   int       `json:"pool_size"`
	PoolStride int       `json:"pool_stride"`
}

type recurrent struct {
	Cell   string    `json:"cell"`
	Hidden int       `json:"hidden"`
	Wx     []float32 `json:"wx"`
	Wh     []float32 `json:"wh"`
	Bx     []float32 `json:"bx"`
	Bh     []float32 `json:"bh"`
}

// Model is a model file ready to score with the reference math.
type Model struct {
	f file
}

// New returns the reference of the model file f: a models.File or
// *models.File (anything whose JSON encoding is a model file). It does not
// validate f beyond what the math needs; score only files models.Parse
// accepts.
func New(f any) (*Model, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("modelref: encode file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	m := &Model{}
	if err := dec.Decode(&m.f); err != nil {
		return nil, fmt.Errorf("modelref: decode file: %w", err)
	}
	switch {
	case len(m.f.Layers) == 0:
		return nil, fmt.Errorf("modelref: no layers")
	case m.f.Conv != nil && m.f.Recurrent != nil:
		return nil, fmt.Errorf("modelref: both conv and recurrent")
	case m.f.Recurrent != nil && m.f.Recurrent.Cell != "gru" && m.f.Recurrent.Cell != "lstm":
		return nil, fmt.Errorf("modelref: cell %q", m.f.Recurrent.Cell)
	case m.f.Conv != nil && m.f.Conv.Pool != "max" && m.f.Conv.Pool != "avg":
		return nil, fmt.Errorf("modelref: pool %q", m.f.Conv.Pool)
	}
	return m, nil
}

// StateLen returns the number of state values per entity: (Window−1)·In
// for a CNN, H for a GRU, 2H for an LSTM, 0 for the dense families.
func (m *Model) StateLen() int {
	switch {
	case m.f.Conv != nil:
		return (m.f.Conv.Window - 1) * len(m.f.Inputs)
	case m.f.Recurrent != nil && m.f.Recurrent.Cell == "lstm":
		return 2 * m.f.Recurrent.Hidden
	case m.f.Recurrent != nil:
		return m.f.Recurrent.Hidden
	}
	return 0
}

// Standardize returns the model inputs of x (x[i] is input i) standardised
// with the runtime's float32 arithmetic: (x − float32(Mean)) · float32(1/Std).
func (m *Model) Standardize(x []float32) []float64 {
	z := make([]float64, len(m.f.Inputs))
	for i, in := range m.f.Inputs {
		z[i] = float64((x[i] - float32(in.Mean)) * float32(1/in.Std))
	}
	return z
}

// StandardizeExact returns the model inputs of x standardised in float64:
// (x − Mean) / Std.
func (m *Model) StandardizeExact(x []float32) []float64 {
	z := make([]float64, len(m.f.Inputs))
	for i, in := range m.f.Inputs {
		z[i] = (float64(x[i]) - in.Mean) / in.Std
	}
	return z
}

// Step scores the standardised row z of an entity whose state is state
// (StateLen values; nil for the dense families). It returns the output, the
// logit (the pre-activation of the last layer) and the entity's state after
// the row, in new memory. It panics if len(z) or len(state) is wrong.
func (m *Model) Step(state, z []float64) (out, logit float64, next []float64) {
	if len(z) != len(m.f.Inputs) || len(state) != m.StateLen() {
		panic(fmt.Sprintf("modelref: %d inputs and %d state values, want %d and %d", len(z), len(state), len(m.f.Inputs), m.StateLen()))
	}
	v := z
	switch {
	case m.f.Conv != nil:
		v, next = m.conv(state, z)
	case m.f.Recurrent != nil:
		v, next = m.cell(state, z)
	}
	out, logit = m.head(v)
	return out, logit, next
}

// conv runs models.Conv on the window of the previous rows hist and z:
//
//	conv[l][c] = act(Bias[c] + Σ_{k<Kernel} Σ_{i<In} x[l+k][i] · Weights[(k·In+i)·C + c])
//
// then pools each channel over PoolSize positions every PoolStride and
// returns the pooled values channel-major (c·P + p) and the next window.
func (m *Model) conv(hist, z []float64) (v, next []float64) {
	c, in := m.f.Conv, len(m.f.Inputs)
	x := append(slices.Clone(hist), z...) // Window rows, oldest first
	C, L := c.Channels, c.Window-c.Kernel+1
	y := make([][]float64, C) // y[c][l]
	for ch := range C {
		y[ch] = make([]float64, L)
		for l := range L {
			s := float64(c.Bias[ch])
			for k := range c.Kernel {
				for i := range in {
					s += x[(l+k)*in+i] * float64(c.Weights[(k*in+i)*C+ch])
				}
			}
			y[ch][l] = act(c.Activation, s)
		}
	}
	P := (L-c.PoolSize)/c.PoolStride + 1
	v = make([]float64, 0, C*P)
	for ch := range C {
		for p := range P {
			w := y[ch][p*c.PoolStride : p*c.PoolStride+c.PoolSize]
			pooled := w[0]
			if c.Pool == "avg" {
				pooled = 0
				for _, e := range w {
					pooled += e
				}
				pooled /= float64(len(w))
			} else {
				for _, e := range w[1:] {
					pooled = math.Max(pooled, e)
				}
			}
			v = append(v, pooled)
		}
	}
	return v, x[in:]
}

// cell runs one step of models.Recurrent from the state (h, or h then c)
// on z. With a = z·Wx + Bx and b = h·Wh + Bh, gate blocks of H columns in
// PyTorch's order (GRU r, z, n; LSTM i, f, g, o):
//
//	GRU:  r = σ(a_r + b_r), z = σ(a_z + b_z), n = tanh(a_n + r·b_n), h' = (1−z)·n + z·h
//	LSTM: i = σ(a_i+b_i), f = σ(a_f+b_f), g = tanh(a_g+b_g), o = σ(a_o+b_o),
//	      c' = f·c + i·g, h' = o·tanh(c')
//
// It returns h' (the head's input) and the next state.
func (m *Model) cell(state, z []float64) (h1, next []float64) {
	r := m.f.Recurrent
	H, G := r.Hidden, 3
	if r.Cell == "lstm" {
		G = 4
	}
	GH := G * H
	h := state[:H]
	a, b := make([]float64, GH), make([]float64, GH)
	for j := range GH {
		a[j], b[j] = float64(r.Bx[j]), float64(r.Bh[j])
		for i := range z {
			a[j] += z[i] * float64(r.Wx[i*GH+j])
		}
		for i := range H {
			b[j] += h[i] * float64(r.Wh[i*GH+j])
		}
	}
	next = make([]float64, len(state))
	h1 = next[:H]
	for j := range H {
		if G == 3 {
			rg, zg := sigmoid(a[j]+b[j]), sigmoid(a[H+j]+b[H+j])
			n := math.Tanh(a[2*H+j] + rg*b[2*H+j])
			h1[j] = (1-zg)*n + zg*h[j]
			continue
		}
		ig, fg := sigmoid(a[j]+b[j]), sigmoid(a[H+j]+b[H+j])
		gg, og := math.Tanh(a[2*H+j]+b[2*H+j]), sigmoid(a[3*H+j]+b[3*H+j])
		c := fg*state[H+j] + ig*gg
		h1[j] = og * math.Tanh(c)
		next[H+j] = c
	}
	return h1, next
}

// head runs the dense layers y = act(x·W + b) on v and returns the output
// and the last layer's pre-activation.
func (m *Model) head(v []float64) (out, logit float64) {
	for li, l := range m.f.Layers {
		y := make([]float64, l.Out)
		for j := range l.Out {
			s := float64(l.Bias[j])
			for i := range l.In {
				s += v[i] * float64(l.Weights[i*l.Out+j])
			}
			if li == len(m.f.Layers)-1 && j == 0 {
				logit = s
			}
			y[j] = act(l.Activation, s)
		}
		v = y
	}
	return v[0], logit
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

func act(name string, x float64) float64 {
	switch name {
	case "identity":
		return x
	case "relu":
		return math.Max(x, 0)
	case "sigmoid":
		return sigmoid(x)
	case "tanh":
		return math.Tanh(x)
	}
	panic(fmt.Sprintf("modelref: activation %q", name))
}
