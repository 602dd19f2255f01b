/* A shared object that is not a saeflow plugin (no entry symbols). */
int not_a_plugin(void);
int not_a_plugin(void) { return 0; }
