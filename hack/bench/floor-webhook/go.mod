module tailor.dev/hack/bench/floor-webhook

go 1.24
