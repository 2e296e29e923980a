// A preload library that does nothing: the bench's start-up row runs each
// program with it too, to show what preloading any library costs (mapping
// it, ld.so's work) apart from what libdedup does.
int empty_preload_marker(void) { return 0; }
