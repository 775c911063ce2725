module tailor.dev/tests/image/workload

go 1.25
