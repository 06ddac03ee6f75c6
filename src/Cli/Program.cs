using WhereToEdit.Cli;

return WteCommands.Run(args, Console.Out, Console.Error);
