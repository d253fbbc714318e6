package iaptunnel_test

const helperEnv = "IAPTUNNEL_TEST_HELPER"

func helperMain() int { return 2 }
