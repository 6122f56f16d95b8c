// Package onnxpb holds the Go types of the ONNX protobuf schema (onnx.proto,
// ONNX 1.12.0, proto2, the file of the ONNX project unchanged, Apache-2.0),
// generated with protoc-gen-go. Only the onnx package of streamscore reads it.
//
// Generated with protoc 3.21.12 (libprotoc) and protoc-gen-go v1.36.12:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go generate ./models/onnx/internal/onnxpb
package onnxpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go_opt=Monnx.proto=github.com/streamscore/streamscore/models/onnx/internal/onnxpb onnx.proto
